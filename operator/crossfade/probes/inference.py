"""Inference probe: ask an OpenAI-compatible endpoint what a user would, classify what came back.

Bounded in time (one deadline over connect, headers and body) and in memory (the body is
read in chunks up to ``max_body_bytes``; a longer body aborts the connection), so a hung
or hostile endpoint costs one timeout and a small buffer, never the operator.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from crossfade.api import InferenceCheck
from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.classify import (
    HTTP_OK,
    Reason,
    Verdict,
    classify_body,
    classify_latency,
    classify_sse_event,
    classify_status,
)
from crossfade.probes.secret_headers import SecretHeaders

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_OVERLOADED_LATENCY_MS = 2000.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
COMPLETION_MAX_TOKENS = 1
STREAM_MAX_TOKENS = 4
DETAIL_MAX_CHARS = 200


class ProbeMode(enum.StrEnum):
    """What the probe asks: list models, or run a tiny (chat) completion."""

    MODELS = "models"
    COMPLETION = "completion"
    CHAT = "chat"


@dataclass(frozen=True, slots=True)
class InferenceProbeConfig:
    """How to probe one placement's endpoint.

    ``stream`` applies to completion modes: the probe then measures time to the first
    token event, and ``latency_ms`` of the result is that time (what a user waits for).
    ``path`` / ``method`` / ``body`` override what ``mode`` would send (the API's
    ``healthCheck.inference``); the body is then checked by the path it went to: ``data``
    for ``.../v1/models``, ``choices`` for completions, nothing more for other paths.
    """

    url: str
    mode: ProbeMode = ProbeMode.MODELS
    model: str = ""
    stream: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    overloaded_latency_ms: float = DEFAULT_OVERLOADED_LATENCY_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    headers: SecretHeaders = field(default_factory=SecretHeaders)
    path: str | None = None
    method: str | None = None
    body: str | None = None
    expected_status: int = HTTP_OK

    @classmethod
    def from_check(
        cls, check: InferenceCheck, *, url: str, headers: SecretHeaders | None = None
    ) -> InferenceProbeConfig:
        """Build from the pool's ``healthCheck.inference`` and a placement's endpoint URL.

        A POST body asking for ``"stream": true`` makes the probe measure time to first token.
        """
        return cls(
            url=url,
            path=check.path,
            method=check.method.value,
            body=check.body,
            stream=_asks_for_stream(check.body),
            expected_status=check.expected_status,
            timeout_s=float(check.timeout_seconds),
            overloaded_latency_ms=float(check.overloaded_latency_milliseconds),
            headers=headers or SecretHeaders(),
        )


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    body: bytes | None
    expect_key: str | None
    streaming: bool


def _asks_for_stream(body: str | None) -> bool:
    if not body:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("stream") is True


class _BodyTooLargeError(Exception):
    pass


class _Failed(Exception):  # noqa: N818 - internal control flow carrying a verdict
    def __init__(self, verdict: Verdict, detail: str = "") -> None:
        super().__init__(verdict.reason.value)
        self.verdict = verdict
        self.detail = detail


def new_session(*, limit: int = 100) -> aiohttp.ClientSession:
    """A client session suited to probing: no cookies, no env proxies, bounded pool."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=4, force_close=False),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,  # a 1 kB gzip bomb must not become 1 GB in memory
    )


async def probe_inference(
    session: aiohttp.ClientSession,
    *,
    placement: str,
    config: InferenceProbeConfig,
    wall_clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Probe once; never raises for anything the endpoint does (only for cancellation)."""
    at = wall_clock()
    started = monotonic()
    try:
        async with asyncio.timeout(config.timeout_s):
            verdict, latency_ms, detail = await _exchange(
                session, config=config, started=started, monotonic=monotonic
            )
    except TimeoutError:
        verdict = Verdict(ProbeOutcome.FAILING, Reason.TIMEOUT)
        latency_ms, detail = None, f"no complete answer within {config.timeout_s:g}s"
    except _Failed as failed:
        verdict, latency_ms, detail = failed.verdict, _elapsed_ms(started, monotonic), failed.detail
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        verdict = Verdict(ProbeOutcome.FAILING, Reason.TLS_ERROR)
        latency_ms, detail = None, type(exc).__name__
    except (aiohttp.ClientError, OSError) as exc:
        verdict = Verdict(ProbeOutcome.FAILING, Reason.CONNECTION_ERROR)
        latency_ms, detail = None, f"{type(exc).__name__}: {exc}"
    detail = config.headers.scrub(f"{verdict.reason.value}: {detail}" if detail else verdict.reason)
    result = ProbeResult(
        placement=placement,
        at=at,
        outcome=verdict.outcome,
        latency_ms=latency_ms,
        detail=detail[:DETAIL_MAX_CHARS],
    )
    log.debug(
        "inference probe",
        extra={
            "placement": placement,
            "outcome": result.outcome.value,
            "reason": verdict.reason.value,
            "latency_ms": latency_ms,
        },
    )
    return result


def _elapsed_ms(started: float, monotonic: Callable[[], float]) -> float:
    return (monotonic() - started) * 1000.0


def _request(config: InferenceProbeConfig) -> _Request:
    base = config.url.rstrip("/")
    if config.mode is ProbeMode.MODELS:
        method, path, body = "GET", "/v1/models", None
    else:
        tokens = STREAM_MAX_TOKENS if config.stream else COMPLETION_MAX_TOKENS
        document: dict[str, object] = {
            "model": config.model,
            "max_tokens": tokens,
            "stream": config.stream,
        }
        if config.mode is ProbeMode.CHAT:
            document["messages"] = [{"role": "user", "content": "ping"}]
            path = "/v1/chat/completions"
        else:
            document["prompt"] = "ping"
            path = "/v1/completions"
        method, body = "POST", json.dumps(document)
    if config.path is not None:
        path = config.path
    if config.method is not None:
        method = config.method.upper()
    if config.body is not None:
        body = config.body
    if path.endswith("/v1/models"):
        expect_key: str | None = "data"
    elif path.endswith("completions"):
        expect_key = "choices"
    else:
        expect_key = None
    streaming = config.stream and method == "POST"
    encoded = body.encode() if body is not None and method != "GET" else None
    return _Request(method, base + path, encoded, expect_key, streaming)


async def _exchange(
    session: aiohttp.ClientSession,
    *,
    config: InferenceProbeConfig,
    started: float,
    monotonic: Callable[[], float],
) -> tuple[Verdict, float | None, str]:
    request = _request(config)
    # identity: with auto_decompress off, a compressed answer would read as malformed
    headers = {"Accept": "application/json", "Accept-Encoding": "identity", **config.headers}
    if request.body is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(
        request.method, request.url, data=request.body, headers=headers, allow_redirects=False
    ) as response:
        by_status = classify_status(
            status=response.status, headers=response.headers, expected=config.expected_status
        )
        if by_status is not None:
            response.close()  # do not drain an error body we will not read
            return by_status, _elapsed_ms(started, monotonic), f"HTTP {response.status}"
        if request.streaming:
            ttfb_ms = await _read_stream(response, config=config, started=started, mt=monotonic)
            verdict = classify_latency(
                latency_ms=ttfb_ms, overloaded_latency_ms=config.overloaded_latency_ms
            )
            total_ms = _elapsed_ms(started, monotonic)
            detail = f"HTTP {response.status} ttfb_ms={ttfb_ms:.1f} total_ms={total_ms:.1f}"
            return verdict, ttfb_ms, detail
        payload = await _read_bounded(response, limit=config.max_body_bytes)
        malformed = classify_body(body=payload, expect_key=request.expect_key)
        if malformed is not None:
            return (
                malformed,
                _elapsed_ms(started, monotonic),
                f"HTTP {response.status}, {len(payload)} bytes",
            )
        latency_ms = _elapsed_ms(started, monotonic)
        verdict = classify_latency(
            latency_ms=latency_ms, overloaded_latency_ms=config.overloaded_latency_ms
        )
        return verdict, latency_ms, f"HTTP {response.status} total_ms={latency_ms:.1f}"


async def _read_bounded(response: aiohttp.ClientResponse, *, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise _Failed(
            Verdict(ProbeOutcome.FAILING, Reason.BODY_TOO_LARGE),
            f"Content-Length {declared} > {limit} bytes",
        )
    buffer = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        buffer += chunk
        if len(buffer) > limit:
            response.close()  # drop the connection rather than read the rest
            raise _Failed(
                Verdict(ProbeOutcome.FAILING, Reason.BODY_TOO_LARGE), f"more than {limit} bytes"
            )
    return bytes(buffer)


async def _read_stream(
    response: aiohttp.ClientResponse,
    *,
    config: InferenceProbeConfig,
    started: float,
    mt: Callable[[], float],
) -> float:
    """Read server-sent events to the end; return ms until the first token event."""
    first_token_ms: float | None = None
    received = 0
    while True:
        try:
            line = await response.content.readuntil(b"\n")
        except ValueError:  # a line longer than the stream buffer allows
            response.close()
            raise _Failed(
                Verdict(ProbeOutcome.FAILING, Reason.BODY_TOO_LARGE), "event line too long"
            ) from None
        if not line:
            break
        received += len(line)
        if received > config.max_body_bytes:
            response.close()
            raise _Failed(
                Verdict(ProbeOutcome.FAILING, Reason.BODY_TOO_LARGE),
                f"stream over {config.max_body_bytes} bytes",
            )
        event = classify_sse_event(line)
        if isinstance(event, Verdict):
            response.close()
            raise _Failed(event, "bad stream event")
        if event is True and first_token_ms is None:
            first_token_ms = _elapsed_ms(started, mt)
        if event is False:
            break
    if first_token_ms is None:
        raise _Failed(Verdict(ProbeOutcome.FAILING, Reason.MALFORMED_BODY), "stream had no token")
    return first_token_ms
