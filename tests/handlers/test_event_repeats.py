"""A condition that lasts is reported by one Event when it starts, not by one every pass.

The cloud below refuses every scale of the standby (throttled) for many passes;
each pass retries and the executor reports the same failure each time. Posting each report
wrote an Event per pool per period for as long as the refusal lasted (issue 13: Events were
a quarter of the steady-state writes at 500 pools). The engine-state annotation stays as it
was too: the retry needs no second write-ahead, and the refusal takes back the request's
time along with its size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from crossfade.engine.plan import EmitEvent, EventType, ScalePlacement
from crossfade.engine.state import PlacementState, PoolState
from crossfade.handlers.executor import ActionFailure, ExecutionReport
from crossfade.handlers.reconcile import (
    forget_failed_scale_requests,
    new_events,
    reconcile_once,
)
from crossfade.providers.base import ScaleResult
from crossfade.providers.errors import Throttled

from .fakes import apply_merge_patch
from .test_reconcile import START_S, Harness


async def refused_scale_events(h: Harness, passes: int) -> list[str]:
    start = len(h.events)
    await h.run(passes)
    return [reason for reason, _ in h.events[start:] if reason.startswith("Scale")]


async def test_a_scale_refused_pass_after_pass_posts_one_event() -> None:
    h = Harness()
    await h.run(5)

    async def scale(*, desired: int, token: str) -> ScaleResult:
        h.gke_group.scale_calls.append((desired, token))
        raise Throttled("Rate exceeded", code="ThrottlingException")

    h.gke_group.scale = scale  # type: ignore[method-assign]
    h.aws.healthy = False
    calls_before = len(h.gke_group.scale_calls)
    reported = await refused_scale_events(h, 20)
    assert len(h.gke_group.scale_calls) - calls_before >= 3  # retried pass after pass
    assert reported == ["ScaleThrottled"]


def test_a_report_missing_from_one_pass_is_posted_again_when_it_returns() -> None:
    refused = EmitEvent(EventType.WARNING, "ScaleThrottled", "scaling gke to 2 failed")
    moved = EmitEvent(EventType.NORMAL, "TrafficStep", "gke=50")
    first, keys = new_events([refused], previous=frozenset())
    assert first == [refused]
    again, keys = new_events([refused, moved], previous=keys)
    assert again == [moved]
    cleared, keys = new_events([], previous=keys)
    assert cleared == []
    back, _ = new_events([refused], previous=keys)
    assert back == [refused]


def test_the_same_report_twice_in_one_pass_is_posted_once() -> None:
    refused = EmitEvent(EventType.WARNING, "ScaleThrottled", "scaling gke to 2 failed")
    posted, _ = new_events([refused, refused], previous=frozenset())
    assert posted == [refused]


async def test_a_scale_refused_pass_after_pass_leaves_the_engine_state_annotation_alone() -> None:
    h = Harness()
    await h.run(5)
    writes: list[str] = []

    async def persist(patch: Mapping[str, str | None]) -> None:
        writes.append("write-ahead")
        meta = h.body["metadata"]
        meta["annotations"] = apply_merge_patch(meta["annotations"], dict(patch))

    async def scale(*, desired: int, token: str) -> ScaleResult:
        h.gke_group.scale_calls.append((desired, token))
        raise Throttled("Rate exceeded", code="ThrottlingException")

    h.gke_group.scale = scale  # type: ignore[method-assign]
    h.aws.healthy = False
    # Until the engine first asks the standby for nodes (the primary's failing probes).
    for _ in range(30):
        calls = len(h.gke_group.scale_calls)
        await step_with(h, persist, writes)
        if len(h.gke_group.scale_calls) > calls:
            break
    await step_with(h, persist, writes)  # the first retry may still note new facts
    writes.clear()
    calls = len(h.gke_group.scale_calls)
    for _ in range(10):
        await step_with(h, persist, writes)
    assert len(h.gke_group.scale_calls) - calls >= 3  # still asked again pass after pass
    assert writes == []


async def step_with(
    h: Harness, persist: Callable[[Mapping[str, str | None]], Awaitable[None]], writes: list[str]
) -> None:
    """One pass as the kopf layer runs it: write-ahead through ``persist``, then the patch."""
    h.clock[0] += 1.0
    outcome = await reconcile_once(body=h.body, runtime=h.runtime, now=h.clock[0], persist=persist)
    meta = h.body["metadata"]
    if outcome.annotations_patch:
        writes.append("annotation")
        meta["annotations"] = apply_merge_patch(meta["annotations"], outcome.annotations_patch)
    if outcome.status_patch:
        h.body["status"] = apply_merge_patch(h.body.get("status"), outcome.status_patch)


def test_a_refused_scale_takes_back_when_it_was_asked_for_along_with_the_size() -> None:
    # Before the pass: the primary at 1 node, no request open (what the annotation holds).
    previous = PoolState(placements={"aws": PlacementState(desired=1, ready_nodes=1)})
    # The pass planned 1 -> 3 and noted the request, then the cloud refused it.
    planned = previous.copy()
    asked = planned.placements["aws"]
    asked.desired, asked.requested_at, asked.scale_up_at = 3, START_S, START_S
    asked.ready_before_scale_up = 1
    action = ScalePlacement("aws", 3, "ServeDemand", "aws: 1 -> 3 nodes")
    report = ExecutionReport(
        failures=[ActionFailure(action, "ScaleThrottled", "refused", retryable=True)]
    )
    forget_failed_scale_requests(planned, report, previous=previous)
    after = planned.placements["aws"]
    assert after.desired is None  # asked again by the next pass
    # Nothing reached the cloud: no boot grace, and the durable state is what it was.
    assert (after.requested_at, after.scale_up_at, after.ready_before_scale_up) == (
        None,
        None,
        None,
    )
