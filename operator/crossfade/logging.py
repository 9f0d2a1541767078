"""Structured JSON logs with pool/placement fields and redaction of anything secret-shaped."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

POOL_FIELD = "pool"
PLACEMENT_FIELD = "placement"
REDACTED = "***"

_pool_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("cf_pool", default=None)
_placement_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cf_placement", default=None
)

# Keys whose values are never logged, whatever their shape.
SECRET_KEY_PATTERN = re.compile(
    r"(secret|token|password|passwd|authorization|api[_-]?key|credential|private[_-]?key"
    r"|session[_-]?key|client[_-]?key|cookie)",
    re.IGNORECASE,
)
# Values that look like credentials wherever they appear inside a message.
SECRET_VALUE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    re.compile(
        r"(?i)((?:secret|token|password|api[_-]?key|aws_secret_access_key)\s*[=:]\s*)"
        r"(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs
)


def redact_text(text: str) -> str:
    """Return ``text`` with credential-shaped substrings replaced by ``***``."""
    for pattern in SECRET_VALUE_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any, *, key: str | None = None) -> Any:
    """Return a copy of ``value`` with secret keys and credential-shaped strings redacted."""
    if key is not None and SECRET_KEY_PATTERN.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {str(k): redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


@contextlib.contextmanager
def log_context(*, pool: str | None = None, placement: str | None = None) -> Iterator[None]:
    """Attach pool and/or placement fields to every record logged inside the block."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    if pool is not None:
        tokens.append((_pool_var, _pool_var.set(pool)))
    if placement is not None:
        tokens.append((_placement_var, _placement_var.set(placement)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Copy the current pool/placement context onto each record (unless already set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, POOL_FIELD, None) is None:
            setattr(record, POOL_FIELD, _pool_var.get())
        if getattr(record, PLACEMENT_FIELD, None) is None:
            setattr(record, PLACEMENT_FIELD, _placement_var.get())
        return True


JSON_SCALARS = (str, int, float, bool, type(None))
# kopf attaches its whole OperatorSettings to every object log record.
DROPPED_EXTRAS = frozenset({"settings"})
EXTRA_MAX_CHARS = 500


def _jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data; other objects (kopf's extras) become short text."""
    if isinstance(value, JSON_SCALARS):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)[:EXTRA_MAX_CHARS]


class RedactingJsonFormatter(JsonFormatter):
    """JSON formatter that drops empty context fields and redacts secrets in every field."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        cleaned = {
            key: redact(_jsonable(value), key=key)
            for key, value in log_data.items()
            if not (key in (POOL_FIELD, PLACEMENT_FIELD) and value is None)
            and key not in DROPPED_EXTRAS
        }
        return dict(super().process_log_record(cleaned))

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging API name)
        formatted = super().formatException(ei)
        return redact_text(formatted if isinstance(formatted, str) else "".join(formatted))


def configure_logging(*, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record (crossfade's and kopf's) to ``stream`` as one JSON line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        RedactingJsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # The SDKs' wire-level debug logs print headers (tokens); keep them quiet.
    for noisy in ("botocore", "urllib3", "kubernetes", "kubernetes_asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
