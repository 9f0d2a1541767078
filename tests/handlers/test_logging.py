"""JSON logs carry pool/placement fields and never secrets."""

from __future__ import annotations

import io
import json
import logging

from crossfade.logging import REDACTED, configure_logging, log_context, redact, redact_text


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


def test_records_are_json_with_context_fields() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(stream=stream)
        log = logging.getLogger("crossfade.test")
        with log_context(pool="ns/chat"), log_context(placement="aws"):
            log.info("scaled with token=%s", "sekrit-value", extra={"api_token": "t0ken"})
        log.info("outside")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["pool"] == "ns/chat" and first["placement"] == "aws"
    assert "sekrit-value" not in first["message"]
    assert first["api_token"] == REDACTED
    assert "pool" not in second and second["message"] == "outside"


def test_non_json_extras_become_text_and_kopf_settings_are_dropped() -> None:
    import queue

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(stream=stream)
        logging.getLogger("kopf.objects").info(
            "handled",
            extra={"settings": object(), "k8s_ref": {"name": "chat"}, "q": queue.SimpleQueue()},
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    record = json.loads(stream.getvalue())
    assert "settings" not in record
    assert record["k8s_ref"] == {"name": "chat"}
    assert record["q"].startswith("<_queue.SimpleQueue")
