"""Fake OpenAI-compatible inference server (aiohttp) with switchable faults, for tests and demos.

It answers ``GET /v1/models``, ``GET /health``, ``POST /v1/completions`` and
``POST /v1/chat/completions`` the way vLLM does (JSON bodies, server-sent events when
``"stream": true``). A behaviour switch injects the faults a real model server shows:
5xx, 429, slowness, hangs, dropped connections, garbage or oversized or non-UTF-8 bodies,
slow token streams and redirect loops.

The behaviour can be flipped in process (``server.set_behaviour(...)``) or by any other
process over the admin endpoint, which no behaviour affects::

    PUT /_admin/behaviour {"behaviour": "hang"}      GET /_admin/behaviour

Run standalone: ``python -m crossfade.testing.inference_server --port 8000 --behaviour healthy``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import json
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ADMIN_PATH = "/_admin/behaviour"
DEFAULT_MODEL = "crossfade/fake-llm"
CHUNK_BYTES = 1024 * 1024
STOP_GRACE_S = 2.0


class Behaviour(enum.StrEnum):
    """What the server does with every inference request."""

    HEALTHY = "healthy"
    ERROR_5XX = "5xx"
    TOO_MANY_REQUESTS = "429"
    SLOW = "slow"
    HANG = "hang"
    CLOSE_CONNECTION = "close-connection"
    GARBAGE_BODY = "garbage-body"
    SLOW_STREAM = "slow-stream"
    HUGE_BODY = "huge-body"
    INVALID_UTF8 = "invalid-utf8"
    REDIRECT_LOOP = "redirect-loop"


@dataclass(frozen=True, slots=True)
class Knobs:
    """The behaviour and its parameters; every field can be set over the admin endpoint."""

    behaviour: Behaviour = Behaviour.HEALTHY
    status: int = 500  # for ERROR_5XX
    retry_after_s: int | None = None  # sent with ERROR_5XX / TOO_MANY_REQUESTS when set
    delay_s: float = 1.0  # SLOW: before the answer; SLOW_STREAM: before each chunk
    stream_chunks: int = 4
    huge_body_bytes: int = 100 * 1024 * 1024
    model: str = DEFAULT_MODEL

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "behaviour": self.behaviour.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Knobs | None = None) -> Knobs:
        """Overlay ``data`` (wire names as in ``to_dict``) on ``base``; unknown keys fail."""
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        values = {**base.to_dict(), **data}
        values["behaviour"] = Behaviour(values["behaviour"])
        return cls(**values)


@dataclass(slots=True)
class RequestLog:
    """What the server saw, for assertions: counts per path and the last request's headers."""

    count: int = 0
    by_path: dict[str, int] = dataclasses.field(default_factory=dict)
    last_headers: dict[str, str] = dataclasses.field(default_factory=dict)


class FakeInferenceServer:
    """One fake model server on 127.0.0.1; use ``async with`` or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        knobs: Knobs | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.knobs = knobs or Knobs()
        self.requests = RequestLog()
        self._port = port
        self._ssl_context = ssl_context  # serve HTTPS (e.g. a self-signed cert for TLS faults)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._site_port: int | None = None

    @property
    def base_url(self) -> str:
        if self._site_port is None:
            raise RuntimeError("server not started")
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._site_port}"

    @property
    def admin_url(self) -> str:
        return self.base_url + ADMIN_PATH

    def set_behaviour(self, behaviour: Behaviour | str, **knobs: Any) -> None:
        """Switch behaviour (and any knob) for every following request."""
        self.knobs = Knobs.from_dict({"behaviour": Behaviour(behaviour), **knobs}, base=self.knobs)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", ADMIN_PATH, self._get_admin)
        app.router.add_route("PUT", ADMIN_PATH, self._put_admin)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=STOP_GRACE_S, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._site_port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, ssl_context=self._ssl_context).start()
        return self.base_url

    async def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers so shutdown is prompt
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeInferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _get_admin(self, request: web.Request) -> web.Response:
        return web.json_response(self.knobs.to_dict())

    async def _put_admin(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("body must be a JSON object")
            self.knobs = Knobs.from_dict(data, base=self.knobs)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.knobs.to_dict())

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.count += 1
        self.requests.by_path[request.path] = self.requests.by_path.get(request.path, 0) + 1
        self.requests.last_headers = dict(request.headers)
        knobs = self.knobs
        stream = False
        if request.method == "POST":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                body = await request.json()
                stream = isinstance(body, dict) and bool(body.get("stream"))
        handler = _HANDLERS[knobs.behaviour]
        return await handler(self, request, knobs, stream)

    async def _healthy(
        self, request: web.Request, knobs: Knobs, stream: bool
    ) -> web.StreamResponse:
        # Any prefix is accepted (``/team-a/v1/models``), as behind a gateway path route; it
        # also lets one server stand in for many endpoints.
        if request.path.endswith("/v1/models") and request.method == "GET":
            return web.json_response(_models(knobs))
        if request.path.endswith("/health") and request.method == "GET":
            return web.Response(status=200)  # vLLM: 200, empty body
        completion_paths = ("/v1/completions", "/v1/chat/completions")
        if request.method == "POST" and request.path.endswith(completion_paths):
            chat = request.path.endswith("chat/completions")
            if stream:
                return await self._stream(request, knobs, chat=chat, chunk_delay_s=0.0)
            return web.json_response(_completion(knobs, chat=chat))
        return web.json_response({"error": {"message": "not found"}}, status=404)

    async def _error(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        headers = {"Retry-After": str(knobs.retry_after_s)} if knobs.retry_after_s else {}
        return web.json_response(
            {"error": {"message": "injected server error", "type": "server_error"}},
            status=knobs.status,
            headers=headers,
        )

    async def _too_many(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        headers = {"Retry-After": str(knobs.retry_after_s or 1)}
        return web.json_response(
            {"error": {"message": "too many requests", "type": "rate_limit"}},
            status=429,
            headers=headers,
        )

    async def _slow(self, request: web.Request, knobs: Knobs, stream: bool) -> web.StreamResponse:
        await self._pause(knobs.delay_s)
        return await self._healthy(request, knobs, stream)

    async def _hang(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        await self._stopping.wait()
        return web.Response(status=503)

    async def _close(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops a handler cancelled with its connection

    async def _garbage(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        return web.Response(
            body=b"<html>upstream gone? {{{ not json", content_type="application/json"
        )

    async def _slow_stream(
        self, request: web.Request, knobs: Knobs, stream: bool
    ) -> web.StreamResponse:
        chat = request.path.endswith("chat/completions")
        return await self._stream(request, knobs, chat=chat, chunk_delay_s=knobs.delay_s)

    async def _huge(self, request: web.Request, knobs: Knobs, stream: bool) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b'{"data": [' + b" " * (CHUNK_BYTES - 10)
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < knobs.huge_body_bytes:
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
        return response

    async def _invalid_utf8(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        return web.Response(
            body=b'{"object": "list", "data": [{"id": "\xff\xfe\xfd"}]}',
            content_type="application/json",
        )

    async def _redirect(self, request: web.Request, knobs: Knobs, stream: bool) -> web.Response:
        return web.Response(status=302, headers={"Location": str(request.rel_url)})

    async def _stream(
        self, request: web.Request, knobs: Knobs, *, chat: bool, chunk_delay_s: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for index in range(knobs.stream_chunks):
                await self._pause(chunk_delay_s)
                event = _chunk(knobs, index=index, chat=chat)
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response

    async def _pause(self, delay_s: float) -> None:
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)


_HANDLERS = {
    Behaviour.HEALTHY: FakeInferenceServer._healthy,
    Behaviour.ERROR_5XX: FakeInferenceServer._error,
    Behaviour.TOO_MANY_REQUESTS: FakeInferenceServer._too_many,
    Behaviour.SLOW: FakeInferenceServer._slow,
    Behaviour.HANG: FakeInferenceServer._hang,
    Behaviour.CLOSE_CONNECTION: FakeInferenceServer._close,
    Behaviour.GARBAGE_BODY: FakeInferenceServer._garbage,
    Behaviour.SLOW_STREAM: FakeInferenceServer._slow_stream,
    Behaviour.HUGE_BODY: FakeInferenceServer._huge,
    Behaviour.INVALID_UTF8: FakeInferenceServer._invalid_utf8,
    Behaviour.REDIRECT_LOOP: FakeInferenceServer._redirect,
}


def _models(knobs: Knobs) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": knobs.model,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "crossfade",
                "max_model_len": 8192,
            }
        ],
    }


def _completion(knobs: Knobs, *, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if chat:
        choice["message"] = {"role": "assistant", "content": "ok"}
    else:
        choice["text"] = "ok"
    return {
        "id": "cmpl-fake",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": knobs.model,
        "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _chunk(knobs: Knobs, *, index: int, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": None}
    if chat:
        choice["delta"] = {"content": f"t{index}"}
    else:
        choice["text"] = f"t{index}"
    return {
        "id": "cmpl-fake",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": knobs.model,
        "choices": [choice],
    }


async def _serve_forever(*, port: int, behaviour: Behaviour) -> None:
    server = FakeInferenceServer(knobs=Knobs(behaviour=behaviour), port=port)
    await server.start()
    print(json.dumps({"url": server.base_url, "admin": server.admin_url}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; prints one JSON line with the URL first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--behaviour", type=Behaviour, default=Behaviour.HEALTHY)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(port=args.port, behaviour=args.behaviour))


if __name__ == "__main__":
    main()
