"""Property: parse_pool and the real apiserver accept and reject the same InferencePools."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings

from crossfade.api import InvalidPoolError, parse_pool
from tests.api.kube import PoolClient
from tests.api.strategies import pool_bodies

pytestmark = pytest.mark.cluster

# Bounded (each example is one apiserver round trip) and derandomized, so CI is repeatable;
# CROSSFADE_API_EXAMPLES raises the count for a longer local search.
MAX_EXAMPLES = int(os.environ.get("CROSSFADE_API_EXAMPLES", "120"))
OUTCOMES: dict[bool, int] = {True: 0, False: 0}


def _python_accepts(body: dict[str, Any]) -> tuple[bool, str]:
    try:
        parse_pool(body)
    except InvalidPoolError as error:
        return False, str(error)
    return True, ""


@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None)
@given(body=pool_bodies())
def test_pydantic_and_apiserver_agree(pools: PoolClient, body: dict[str, Any]) -> None:
    reply = pools.dry_run_create(body)
    accepted, python_message = _python_accepts(body)
    OUTCOMES[reply.ok] += 1
    assert accepted == reply.ok, (
        f"apiserver {'accepted' if reply.ok else 'rejected'}: {reply.message}\n"
        f"parse_pool {'accepted' if accepted else 'rejected'}: {python_message}\n{body}"
    )


def test_the_property_saw_both_outcomes() -> None:
    # Runs after the property in file order: a generator that only ever produced valid (or
    # only invalid) pools would prove nothing.
    assert OUTCOMES[True] >= 5, OUTCOMES
    assert OUTCOMES[False] >= 5, OUTCOMES
