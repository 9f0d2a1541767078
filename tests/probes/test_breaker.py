"""Circuit breaker transitions, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossfade.probes.breaker import BreakerRegistry, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, *, threshold: int = 3, cool_down_s: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, cool_down_s=cool_down_s, clock=clock)


def test_opens_after_threshold_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_success()  # resets the consecutive count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.snapshot().opened_at == 500.0


def test_half_open_after_cool_down_allows_exactly_one_trial() -> None:
    clock = FakeClock()
    breaker = make(clock, threshold=1, cool_down_s=30.0)
    breaker.record_failure()
    clock.now += 29.9
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # the trial is still in flight


def test_trial_success_closes() -> None:
    clock = FakeClock()
    breaker = make(clock, threshold=1)
    breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.allow()
    assert breaker.snapshot().consecutive_failures == 0


def test_trial_failure_reopens_and_restarts_cool_down() -> None:
    clock = FakeClock()
    breaker = make(clock, threshold=3)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()  # one failure in half-open is enough
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot().opened_at == clock.now
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_released_trial_can_be_retried() -> None:
    clock = FakeClock()
    breaker = make(clock, threshold=1, cool_down_s=0)
    breaker.record_failure()
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_error_rate_over_recent_calls() -> None:
    breaker = make(FakeClock(), threshold=100)
    assert breaker.error_rate() == 0.0
    for ok in (True, False, True, False):
        breaker.record_success() if ok else breaker.record_failure()
    assert breaker.error_rate() == pytest.approx(0.5)


def test_registry_shares_one_breaker_per_provider_key() -> None:
    clock = FakeClock()
    registry = BreakerRegistry(failure_threshold=1, cool_down_s=10, clock=clock)
    registry.for_provider("aws/eu-west-1").record_failure()
    assert registry.for_provider("aws/eu-west-1").state is BreakerState.OPEN
    assert registry.for_provider("gcp/europe-west4").state is BreakerState.CLOSED
    assert set(registry.snapshots()) == {"aws/eu-west-1", "gcp/europe-west4"}


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


@given(st.lists(st.sampled_from(["ok", "fail", "tick"]), max_size=60))
def test_never_open_without_threshold_consecutive_failures(events: list[str]) -> None:
    clock = FakeClock()
    breaker = make(clock, threshold=3, cool_down_s=5)
    run = 0
    longest = 0
    for event in events:
        if event == "tick":
            clock.now += 2
        elif breaker.allow():
            if event == "ok":
                breaker.record_success()
                run = 0
            else:
                breaker.record_failure()
                run += 1
                longest = max(longest, run)
        if breaker.state is not BreakerState.CLOSED:
            assert longest >= 3
