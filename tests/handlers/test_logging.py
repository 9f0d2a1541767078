"""JSON logs carry pool/placement fields and never secrets."""

from __future__ import annotations

import io
import json
import logging
import queue
from collections.abc import Iterator

import kopf
import pytest

from crossfade.handlers import settings as cf_settings
from crossfade.logging import (
    REDACTED,
    configure_logging,
    log_context,
    redact,
    redact_text,
)

# Loggers whose levels configure_logging() sets, besides the root logger's handlers and level.
QUIETED_LOGGERS = ("botocore", "urllib3", "kubernetes", "kubernetes_asyncio", "aiohttp.access")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put back the process-wide logging state configure_logging() changes, for later tests."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def test_credentials_in_text_are_redacted() -> None:
    text = "auth Bearer abcdefghijklmnop key AKIAABCDEFGHIJKLMNOP password=hunter22 ok"
    out = redact_text(text)
    assert "abcdefghijklmnop" not in out
    assert "AKIAABCDEFGHIJKLMNOP" not in out
    assert "hunter22" not in out
    assert out.endswith(" ok")


def test_secret_keys_are_redacted_recursively() -> None:
    data = {"headers": {"Authorization": "x", "accept": "json"}, "apiKey": "k", "n": 3}
    assert redact(data) == {
        "headers": {"Authorization": REDACTED, "accept": "json"},
        "apiKey": REDACTED,
        "n": 3,
    }


@pytest.mark.usefixtures("restored_logging")
def test_records_are_json_with_context_fields() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = logging.getLogger("crossfade.test")
    with log_context(pool="ns/chat"), log_context(placement="aws"):
        log.info("scaled with token=%s", "sekrit-value", extra={"api_token": "t0ken"})
    log.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["pool"] == "ns/chat" and first["placement"] == "aws"
    assert "sekrit-value" not in first["message"]
    assert first["api_token"] == REDACTED
    assert "pool" not in second and second["message"] == "outside"


@pytest.mark.usefixtures("restored_logging")
def test_non_json_extras_become_text_and_kopf_settings_are_dropped() -> None:
    # Importing kopf attaches its K8sPoster handler to "kopf.objects"; that handler reads
    # record.settings.posting, so the record carries real OperatorSettings configured the way
    # the operator configures them (log lines are not mirrored into Events), as kopf's
    # ObjectLogger attaches them, whichever test modules were imported before this one.
    settings = kopf.OperatorSettings()
    cf_settings.configure(settings, component="crossfade", instance="test")
    stream = io.StringIO()
    configure_logging(stream=stream)
    logging.getLogger("kopf.objects").info(
        "handled",
        extra={"settings": settings, "k8s_ref": {"name": "chat"}, "q": queue.SimpleQueue()},
    )
    record = json.loads(stream.getvalue())
    assert "settings" not in record
    assert record["k8s_ref"] == {"name": "chat"}
    assert record["q"].startswith("<_queue.SimpleQueue")
