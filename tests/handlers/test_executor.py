"""The executor: effects in order, errors collected as Warning events, idempotent tokens."""

from __future__ import annotations

from collections.abc import Mapping

from crossfade.engine.plan import EmitEvent, EventType, ScalePlacement, SetWeights
from crossfade.handlers.executor import execute, scale_token
from crossfade.providers.errors import Throttled
from crossfade.routers.base import ApplyResult, RouteReading, RouterUnavailableError
from crossfade.routers.noop import NoopRouter

from .fakes import FakeNodeGroup


class BrokenRouter:
    name = "broken"

    async def read(self) -> RouteReading:
        raise RouterUnavailableError("down")

    async def apply(self, weights: Mapping[str, int]) -> ApplyResult:
        raise RouterUnavailableError("apiserver said 503")


async def test_effects_run_and_reports_are_collected() -> None:
    group = FakeNodeGroup("gke", desired=0)
    router = NoopRouter(placements=frozenset({"aws", "gke"}))
    note = EmitEvent(EventType.NORMAL, "Failover", "moving")
    report = await execute(
        [
            ScalePlacement("gke", 2, "Failover"),
            SetWeights({"aws": 0, "gke": 100}, "Failover"),
            note,
        ],
        pool_uid="u",
        epoch=1,
        providers={"gke": group},
        routers=[router],
    )
    assert group.desired == 2
    assert report.weights_written == {"aws": 0, "gke": 100}
    assert report.events == [note]
    assert report.failures == []


async def test_errors_become_warnings_and_do_not_stop_later_actions() -> None:
    group = FakeNodeGroup("gke", desired=0, next_scale_error=Throttled("slow down", code="Thr"))
    router = NoopRouter(placements=frozenset({"aws", "gke"}))
    report = await execute(
        [ScalePlacement("gke", 2, "Failover"), SetWeights({"aws": 50, "gke": 50}, "Step")],
        pool_uid="u",
        epoch=1,
        providers={"gke": group},
        routers=[BrokenRouter(), router],
    )
    reasons = [e.reason for e in report.events]
    assert reasons == ["ScaleThrottled", "TrafficRouterUnavailable"]
    assert all(e.type is EventType.WARNING for e in report.events)
    assert report.failures[0].retryable
    assert report.weights_written == {"aws": 50, "gke": 50}


async def test_held_effects_are_withheld() -> None:
    group = FakeNodeGroup("gke", desired=0)
    actions = [ScalePlacement("gke", 2, "Failover")]
    report = await execute(
        actions, pool_uid="u", epoch=1, providers={"gke": group}, routers=[], hold_effects=True
    )
    assert group.scale_calls == []
    assert report.withheld == actions


async def test_missing_provider_is_a_failure() -> None:
    report = await execute(
        [ScalePlacement("aws", 1, "Warm")], pool_uid="u", epoch=0, providers={}, routers=[]
    )
    assert [f.reason for f in report.failures] == ["NoProvider"]


def test_scale_token_is_stable_per_intent() -> None:
    action = ScalePlacement("gke", 2, "Failover")
    assert scale_token(pool_uid="u", action=action, epoch=3) == scale_token(
        pool_uid="u", action=ScalePlacement("gke", 2, "Other reason"), epoch=3
    )
    assert scale_token(pool_uid="u", action=action, epoch=3) != scale_token(
        pool_uid="u", action=action, epoch=4
    )
