"""Pure classification of what an inference endpoint answered into healthy/overloaded/failing."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass

from crossfade.engine.observations import ProbeOutcome

HTTP_OK = 200
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVICE_UNAVAILABLE = 503


class Reason(enum.StrEnum):
    """Why a probe was classified as it was (CamelCase, machine-readable, leads ``detail``)."""

    OK = "OK"
    SLOW = "SlowResponse"
    RATE_LIMITED = "RateLimited"
    BACKPRESSURE = "Backpressure"
    SERVER_ERROR = "ServerError"
    CLIENT_ERROR = "ClientError"
    UNEXPECTED_STATUS = "UnexpectedStatus"
    REDIRECT = "Redirect"
    TIMEOUT = "Timeout"
    CONNECTION_ERROR = "ConnectionError"
    TLS_ERROR = "TLSError"
    BODY_TOO_LARGE = "BodyTooLarge"
    INVALID_UTF8 = "InvalidUTF8"
    MALFORMED_BODY = "MalformedBody"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An outcome and the reason for it."""

    outcome: ProbeOutcome
    reason: Reason


def classify_status(
    *, status: int, headers: Mapping[str, str], expected: int = HTTP_OK
) -> Verdict | None:
    """Classify by status alone; None means "the expected status, go on and read the body".

    429 and a 503 carrying Retry-After are the server's own backpressure (vLLM, TGI and
    gateways queueing) and count as overloaded. A bare 503 is what a proxy with no healthy
    upstream answers, so it counts as failing like any other 5xx. Redirects are never
    followed (they could carry the API key elsewhere) and count as failing.
    """
    if status == expected:
        return None
    if status == HTTP_TOO_MANY_REQUESTS:
        return Verdict(ProbeOutcome.OVERLOADED, Reason.RATE_LIMITED)
    if status == HTTP_SERVICE_UNAVAILABLE and "retry-after" in {k.lower() for k in headers}:
        return Verdict(ProbeOutcome.OVERLOADED, Reason.BACKPRESSURE)
    if status >= 500:
        return Verdict(ProbeOutcome.FAILING, Reason.SERVER_ERROR)
    if 300 <= status < 400:
        return Verdict(ProbeOutcome.FAILING, Reason.REDIRECT)
    if 200 <= status < 300:
        return Verdict(ProbeOutcome.FAILING, Reason.UNEXPECTED_STATUS)
    return Verdict(ProbeOutcome.FAILING, Reason.CLIENT_ERROR)


def classify_body(*, body: bytes, expect_key: str | None) -> Verdict | None:
    """Check a body: JSON with ``expect_key`` when given, otherwise only valid UTF-8."""
    if expect_key is not None:
        return classify_json_body(body=body, expect_key=expect_key)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict(ProbeOutcome.FAILING, Reason.INVALID_UTF8)
    return None


def classify_json_body(*, body: bytes, expect_key: str) -> Verdict | None:
    """Check a complete JSON body is UTF-8, an object, and holds a non-empty ``expect_key`` list.

    Returns None when the body is well formed.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict(ProbeOutcome.FAILING, Reason.INVALID_UTF8)
    try:
        document = json.loads(text)
    except ValueError:
        return Verdict(ProbeOutcome.FAILING, Reason.MALFORMED_BODY)
    if not isinstance(document, dict):
        return Verdict(ProbeOutcome.FAILING, Reason.MALFORMED_BODY)
    items = document.get(expect_key)
    if not isinstance(items, list) or not items:
        return Verdict(ProbeOutcome.FAILING, Reason.MALFORMED_BODY)
    return None


def classify_sse_event(line: bytes) -> Verdict | bool | None:
    """Classify one server-sent-events line of a streamed completion.

    Returns True for a data event carrying a token chunk, False for ``[DONE]``, None for
    lines that carry no data (blank lines, comments, other fields), or a failing verdict
    for a data line that is not UTF-8 JSON with ``choices``.
    """
    stripped = line.strip()
    if not stripped.startswith(b"data:"):
        return None
    payload = stripped[len(b"data:") :].strip()
    if payload == b"[DONE]":
        return False
    verdict = classify_json_body(body=payload, expect_key="choices")
    return verdict if verdict is not None else True


def classify_latency(*, latency_ms: float, overloaded_latency_ms: float) -> Verdict:
    """A well-formed answer is healthy unless slower than the overload threshold."""
    if latency_ms > overloaded_latency_ms:
        return Verdict(ProbeOutcome.OVERLOADED, Reason.SLOW)
    return Verdict(ProbeOutcome.HEALTHY, Reason.OK)
