"""Session-wide test settings: hypothesis profiles and a guard against empty runs."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# CI replays the same examples every run (derandomize); developers get fresh ones.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

MIN_TESTS_ENV = "CROSSFADE_MIN_TESTS"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Turn "no tests ran" (exit 5) into a failure, and enforce a floor in CI."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print("\n[crossfade] no tests were collected: treating the run as failed")
        return
    floor = int(os.environ.get(MIN_TESTS_ENV, "0"))
    if floor and session.testscollected < floor:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(
            f"\n[crossfade] only {session.testscollected} tests collected, "
            f"expected at least {floor} ({MIN_TESTS_ENV})"
        )
