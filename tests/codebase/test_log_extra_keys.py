"""Log calls never pass an ``extra`` key that clashes with a LogRecord attribute.

``logging`` raises ``KeyError("Attempt to overwrite 'name' in LogRecord")`` for such a key,
but only when the record is actually emitted, so a clash hides until the operator runs at
that level. Three such clashes (``message``, ``name`` twice) each dropped real work before
this check existed; it reads every ``extra=`` dict literal in the package's source.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "crossfade"
# Attributes a LogRecord sets itself, plus the two ``makeRecord`` refuses explicitly.
RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def extra_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """Return (line, key) of every constant string key in a dict inside an ``extra=``."""
    found: list[tuple[int, str]] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        for keyword in call.keywords:
            if keyword.arg != "extra":
                continue
            for node in ast.walk(keyword.value):
                if isinstance(node, ast.Dict):
                    found.extend(
                        (key.lineno, key.value)
                        for key in node.keys
                        if isinstance(key, ast.Constant) and isinstance(key.value, str)
                    )
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "dict"
                ):
                    found.extend((node.lineno, kw.arg) for kw in node.keywords if kw.arg)
    return found


def clashes(source: str) -> list[tuple[int, str]]:
    """Return the ``extra`` keys in ``source`` that a LogRecord would refuse."""
    return [(line, key) for line, key in extra_keys(ast.parse(source)) if key in RESERVED]


def test_the_check_sees_a_clash() -> None:
    source = 'log.info("x", extra={"pool": p, "name": n})\nlog.info("y", extra=dict(message=m))\n'
    assert clashes(source) == [(1, "name"), (2, "message")]


def test_reserved_set_matches_what_logging_refuses() -> None:
    logger = logging.getLogger("crossfade.tests.extra")
    for key in ("name", "message", "msg", "args", "levelname"):
        assert key in RESERVED
        with pytest.raises(KeyError):
            logger.makeRecord("n", logging.INFO, "f", 1, "m", (), None, extra={key: 1})


def test_no_log_call_in_the_package_uses_a_reserved_extra_key() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {key!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, key in clashes(path.read_text(encoding="utf-8"))
    ]
    scanned = sum(
        len(extra_keys(ast.parse(p.read_text(encoding="utf-8")))) for p in PACKAGE.rglob("*.py")
    )
    assert scanned > 20, "the scan found almost no extra= keys; is it reading the package?"
    assert offenders == []
