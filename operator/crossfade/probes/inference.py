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

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.classify import (
    Reason,
    Verdict,
    classify_json_body,
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
    """

    url: str
    mode: ProbeMode = ProbeMode.MODELS
    model: str = ""
    stream: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    overloaded_latency_ms: float = DEFAULT_OVERLOADED_LATENCY_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    headers: SecretHeaders = field(default_factory=SecretHeaders)


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


def _request(config: InferenceProbeConfig) -> tuple[str, str, dict[str, object] | None]:
    base = config.url.rstrip("/")
    if config.mode is ProbeMode.MODELS:
        return "GET", f"{base}/v1/models", None
    stream = config.stream
    tokens = STREAM_MAX_TOKENS if stream else COMPLETION_MAX_TOKENS
    body: dict[str, object] = {"model": config.model, "max_tokens": tokens, "stream": stream}
    if config.mode is ProbeMode.CHAT:
        body["messages"] = [{"role": "user", "content": "ping"}]
        return "POST", f"{base}/v1/chat/completions", body
    body["prompt"] = "ping"
    return "POST", f"{base}/v1/completions", body


async def _exchange(
    session: aiohttp.ClientSession,
    *,
    config: InferenceProbeConfig,
    started: float,
    monotonic: Callable[[], float],
) -> tuple[Verdict, float | None, str]:
    method, url, body = _request(config)
    # identity: with auto_decompress off, a compressed answer would read as malformed
    headers = {"Accept": "application/json", "Accept-Encoding": "identity", **config.headers}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(
        method, url, data=data, headers=headers, allow_redirects=False
    ) as response:
        by_status = classify_status(status=response.status, headers=response.headers)
        if by_status is not None:
            response.close()  # do not drain an error body we will not read
            return by_status, _elapsed_ms(started, monotonic), f"HTTP {response.status}"
        streaming = config.stream and config.mode is not ProbeMode.MODELS
        if streaming:
            ttfb_ms = await _read_stream(response, config=config, started=started, mt=monotonic)
            verdict = classify_latency(
                latency_ms=ttfb_ms, overloaded_latency_ms=config.overloaded_latency_ms
            )
            total_ms = _elapsed_ms(started, monotonic)
            return verdict, ttfb_ms, f"HTTP 200 ttfb_ms={ttfb_ms:.1f} total_ms={total_ms:.1f}"
        payload = await _read_bounded(response, limit=config.max_body_bytes)
        expect = "data" if config.mode is ProbeMode.MODELS else "choices"
        malformed = classify_json_body(body=payload, expect_key=expect)
        if malformed is not None:
            return malformed, _elapsed_ms(started, monotonic), f"HTTP 200, {len(payload)} bytes"
        latency_ms = _elapsed_ms(started, monotonic)
        verdict = classify_latency(
            latency_ms=latency_ms, overloaded_latency_ms=config.overloaded_latency_ms
        )
        return verdict, latency_ms, f"HTTP 200 total_ms={latency_ms:.1f}"


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
