"""A condition that lasts is reported by one Event when it starts, not by one every pass.

The cloud below refuses every scale of the standby (throttled) for many passes;
each pass retries and the executor reports the same failure each time. Posting each report
wrote an Event per pool per period for as long as the refusal lasted (issue 13: Events were
a quarter of the steady-state writes at 500 pools).
"""

from __future__ import annotations

from crossfade.engine.plan import EmitEvent, EventType
from crossfade.handlers.reconcile import new_events
from crossfade.providers.base import ScaleResult
from crossfade.providers.errors import Throttled

from .test_reconcile import Harness


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
