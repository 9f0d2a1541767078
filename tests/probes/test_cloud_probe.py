"""The cloud probe turns describe results and typed errors into ProviderObservations."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from crossfade.engine.observations import ProviderErrorKind, ProviderObservation
from crossfade.probes.breaker import BreakerState, CircuitBreaker
from crossfade.probes.cloud import CloudProbe
from crossfade.providers.base import HealthIssue, NodeGroupState
from crossfade.providers.errors import NotFound, PermissionDenied, ProviderUnavailable, Throttled


async def observed(probe: CloudProbe) -> ProviderObservation:
    """Observe once; these tests expect an observation every time (no stale answer yet)."""
    seen = await probe.observe()
    assert seen is not None
    return seen


def State(
    *,
    desired: int = 3,
    ready: int | None = 2,
    updating: bool = False,
    health_issues: tuple[HealthIssue, ...] = (),
) -> NodeGroupState:
    return NodeGroupState(
        desired=desired,
        min_size=0,
        max_size=10,
        ready=ready,
        status="ACTIVE",
        updating=updating,
        health_issues=health_issues,
    )


@dataclass
class ScriptedProvider:
    """Answers describe() from a script: a State, an exception to raise, or "hang"."""

    script: list[object] = field(default_factory=list)
    calls: int = 0
    hanging: asyncio.Event = field(default_factory=asyncio.Event)

    async def describe(self) -> NodeGroupState:
        self.calls += 1
        step = self.script.pop(0) if self.script else State()
        if step == "hang":
            self.hanging.set()
            await asyncio.Event().wait()
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, NodeGroupState)
        return step


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def probe_with(
    provider: ScriptedProvider, clock: FakeClock, *, timeout_s: float = 5.0
) -> tuple[CloudProbe, CircuitBreaker]:
    breaker = CircuitBreaker(failure_threshold=2, cool_down_s=60, clock=clock)
    probe = CloudProbe(
        placement="eks-a",
        provider=provider,
        breaker=breaker,
        timeout_s=timeout_s,
        wall_clock=lambda: 1_700_000_000.0 + clock.now,
    )
    return probe, breaker


async def test_describe_result_becomes_observation() -> None:
    provider = ScriptedProvider([State(desired=4, ready=3, updating=True)])
    probe, _ = probe_with(provider, FakeClock())
    seen = await observed(probe)
    assert (seen.placement, seen.desired, seen.ready, seen.min_size, seen.max_size) == (
        "eks-a",
        4,
        3,
        0,
        10,
    )
    assert seen.updating and seen.error is None and seen.at == 1_700_000_000.0


async def test_insufficient_capacity_health_issue_is_reported_as_error_kind() -> None:
    issue = HealthIssue("AsgInstanceLaunchFailures", "no p5 capacity in use1-az2", True)
    probe, breaker = probe_with(ScriptedProvider([State(health_issues=(issue,))]), FakeClock())
    seen = await observed(probe)
    assert seen.error is ProviderErrorKind.INSUFFICIENT_CAPACITY
    assert "no p5 capacity" in seen.message
    assert breaker.state is BreakerState.CLOSED


async def test_api_outage_opens_breaker_then_half_open_trial_closes_it() -> None:
    clock = FakeClock()
    down = ProviderUnavailable("503 from eks", code="ServiceUnavailableException")
    provider = ScriptedProvider([down, down])
    probe, breaker = probe_with(provider, clock)
    assert (await observed(probe)).error is ProviderErrorKind.UNAVAILABLE
    assert (await observed(probe)).error is ProviderErrorKind.UNAVAILABLE
    assert breaker.state is BreakerState.OPEN
    gated = await observed(probe)
    assert gated.error is ProviderErrorKind.UNAVAILABLE and "CircuitOpen" in gated.message
    assert provider.calls == 2  # the open breaker did not call the API
    clock.now += 60
    recovered = await observed(probe)
    assert recovered.error is None and recovered.desired == 3
    assert breaker.snapshot().state is BreakerState.CLOSED and provider.calls == 3


async def test_answers_from_a_working_api_do_not_trip_the_breaker() -> None:
    clock = FakeClock()
    errors: list[object] = [
        NotFound("no such nodegroup", code="ResourceNotFoundException"),
        PermissionDenied("denied", code="AccessDeniedException"),
        NotFound("no such nodegroup", code="ResourceNotFoundException"),
    ]
    probe, breaker = probe_with(ScriptedProvider(errors), clock)
    kinds = [(await observed(probe)).error for _ in range(3)]
    assert kinds == [
        ProviderErrorKind.NOT_FOUND,
        ProviderErrorKind.PERMISSION_DENIED,
        ProviderErrorKind.NOT_FOUND,
    ]
    assert breaker.state is BreakerState.CLOSED


async def test_throttling_and_untyped_errors_count_as_api_failures() -> None:
    clock = FakeClock()
    script: list[object] = [
        Throttled("Rate exceeded", code="ThrottlingException"),
        RuntimeError("bug"),
    ]
    probe, breaker = probe_with(ScriptedProvider(script), clock)
    throttled = await observed(probe)
    assert throttled.error is ProviderErrorKind.THROTTLED
    assert throttled.message == "ThrottlingException: Rate exceeded"
    second = await observed(probe)
    assert second.error is ProviderErrorKind.UNAVAILABLE and "RuntimeError" in second.message
    assert breaker.state is BreakerState.OPEN


async def test_hung_describe_times_out_and_counts_as_failure() -> None:
    clock = FakeClock()
    probe, breaker = probe_with(ScriptedProvider(["hang"]), clock, timeout_s=0.05)
    seen = await observed(probe)
    assert seen.error is ProviderErrorKind.UNAVAILABLE and seen.message.startswith("Timeout")
    assert breaker.snapshot().consecutive_failures == 1


async def test_cancelled_trial_releases_the_half_open_slot() -> None:
    clock = FakeClock()
    down = ProviderUnavailable("down")
    provider = ScriptedProvider([down, down, "hang"])
    probe, breaker = probe_with(provider, clock)
    await observed(probe)
    await observed(probe)
    clock.now += 60
    task = asyncio.create_task(probe.observe())
    await provider.hanging.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert breaker.allow()  # the slot came back


async def test_errors_are_observed_with_info_logging_enabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The operator logs at INFO; a log call that clashes with LogRecord's own attributes
    # raises there (and only there), which would drop the observation.
    clock = FakeClock()
    probe, _ = probe_with(ScriptedProvider([ProviderUnavailable("boom", code="HTTP503")]), clock)
    with caplog.at_level(logging.INFO, logger="crossfade.probes.cloud"):
        seen = await observed(probe)
    assert seen.error is ProviderErrorKind.UNAVAILABLE
    record = next(r for r in caplog.records if r.getMessage() == "cloud probe error")
    assert record.__dict__["detail"] == "HTTP503: boom"


async def test_throttled_describe_is_no_fresh_observation_while_the_last_answer_stands() -> None:
    clock = FakeClock()
    refused = Throttled("token bucket empty", code="ClientRateLimited")
    cloud = Throttled("Rate exceeded", code="ThrottlingException")
    provider = ScriptedProvider([State(desired=3), refused, cloud, refused])
    probe, breaker = probe_with(provider, clock)
    answer = await observed(probe)
    clock.now += 10
    assert await probe.observe() is None  # refused by the local bucket: never sent
    assert breaker.snapshot().consecutive_failures == 0
    clock.now += 10
    assert await probe.observe_or_last() == answer  # the scheduler gets the standing answer
    assert breaker.snapshot().consecutive_failures == 1  # the cloud's throttle counts
    clock.now += probe.stale_after_s
    late = await observed(probe)
    assert late.error is ProviderErrorKind.THROTTLED  # outlasted the answer: reported
