"""One observe-decide-act pass, repeated over a fake clock with fake clouds and endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crossfade.engine.observations import NodeObservation
from crossfade.handlers import manual
from crossfade.handlers.observe import PlacementObservers
from crossfade.handlers.reconcile import (
    STATE_ANNOTATION,
    PassOutcome,
    PoolRuntime,
    durable_state,
    reconcile_once,
)
from crossfade.handlers.wiring import NodeSizedProvider
from crossfade.probes.nodes import NodeCacheNotSyncedError
from crossfade.providers.errors import InsufficientCapacity, Throttled
from crossfade.routers.noop import NoopRouter

from .fakes import (
    FakeEndpoint,
    FakeNodeGroup,
    apply_merge_patch,
    fast_spec,
    observers_for,
    pool_body,
)

START_S = 1_800_000_000.0


class Harness:
    """A pool, its fakes, and the object as the apiserver would hold it after each pass."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.clock = [START_S]
        self.aws = FakeEndpoint("aws", clock=self.clock)
        self.gke = FakeEndpoint("gke", clock=self.clock)
        self.aws_group = FakeNodeGroup("aws", desired=2, min_size=1, max_size=2)
        self.gke_group = FakeNodeGroup("gke", desired=0, min_size=0, max_size=2)
        self.router = NoopRouter(placements=frozenset({"aws", "gke"}))
        self.runtime = PoolRuntime(
            observers=[
                observers_for(self.aws, self.aws_group),
                observers_for(self.gke, self.gke_group),
            ],
            providers={"aws": self.aws_group, "gke": self.gke_group},
            routers=[self.router],
        )
        self.body = pool_body(spec or fast_spec())
        self.status_writes = 0
        self.annotation_writes = 0
        self.events: list[tuple[str, str]] = []

    async def step(self, seconds: float = 1.0) -> PassOutcome:
        self.clock[0] += seconds
        outcome = await reconcile_once(body=self.body, runtime=self.runtime, now=self.clock[0])
        if outcome.status_patch:
            self.status_writes += 1
            self.body["status"] = apply_merge_patch(self.body.get("status"), outcome.status_patch)
        if outcome.annotations_patch:
            self.annotation_writes += 1
            meta = self.body["metadata"]
            meta["annotations"] = apply_merge_patch(meta["annotations"], outcome.annotations_patch)
        self.events.extend((e.reason, e.message) for e in outcome.events)
        return outcome

    async def run(self, passes: int) -> None:
        for _ in range(passes):
            await self.step()

    @property
    def weights(self) -> dict[str, int]:
        placements = self.body.get("status", {}).get("placements") or ()
        return {p["name"]: p["weight"] for p in placements if "weight" in p}

    def condition(self, kind: str) -> dict[str, Any] | None:
        for c in self.body.get("status", {}).get("conditions") or ():
            if c["type"] == kind:
                return dict(c)
        return None


async def test_steady_state_makes_no_writes_after_settling() -> None:
    h = Harness()
    await h.run(10)
    assert h.weights == {"aws": 100, "gke": 0}
    writes = (h.status_writes, h.annotation_writes)
    await h.run(10)
    assert (h.status_writes, h.annotation_writes) == writes


async def test_outage_scales_standby_then_shifts_traffic_and_records_why() -> None:
    h = Harness()
    await h.run(5)
    h.aws.healthy = False
    for _ in range(30):
        await h.step()
        if h.weights.get("gke") == 100:
            break
    assert h.weights == {"aws": 0, "gke": 100}
    assert h.gke_group.desired >= 1
    history = h.body["status"]["history"]
    assert history and history[0].get("to") == "gke"
    reasons = {reason for reason, _ in h.events}
    assert reasons & {"Failover", "FailoverStarted", "FailoverCompleted"}, reasons
    placements = {p["name"]: p for p in h.body["status"]["placements"]}
    assert placements["aws"]["health"] == "Unhealthy"


async def test_both_failing_holds_weights_static() -> None:
    h = Harness()
    await h.run(5)
    before = h.weights
    h.aws.healthy = False
    h.gke.healthy = False
    await h.run(15)
    assert h.weights == before
    fail_static = h.condition("FailStatic")
    assert fail_static is not None and fail_static["status"] == "True"
    assert h.body["status"]["healthyPlacements"] == "0/2"


async def test_state_survives_a_restart_without_repeating_the_scale_up() -> None:
    h = Harness()
    await h.run(5)
    warm = list(h.gke_group.changes)
    h.aws.healthy = False
    for _ in range(30):
        await h.step()
        if len(h.gke_group.changes) > len(warm):
            break
    assert len(h.gke_group.changes) == len(warm) + 1, "the failover scale-up happened"
    assert h.weights.get("gke", 0) < 100, "crash lands mid-failover"
    # A new operator process: same object (annotations + status), no memory.
    h.runtime = PoolRuntime(
        observers=list(h.runtime.observers),
        providers=dict(h.runtime.providers),
        routers=[h.router],
    )
    await h.run(20)
    assert h.weights.get("gke") == 100
    assert len(h.gke_group.changes) == len(set(h.gke_group.changes)), h.gke_group.changes
    assert h.gke_group.changes == [*warm, h.gke_group.changes[len(warm)]]


async def test_persisted_state_leaves_out_per_probe_facts() -> None:
    h = Harness()
    await h.run(3)
    stored = json.loads(h.body["metadata"]["annotations"][STATE_ANNOTATION])
    assert stored == durable_state(stored)
    assert all("lastProbeAt" not in p for p in stored["placements"].values())


async def test_freeze_withholds_every_effect() -> None:
    h = Harness()
    await h.run(5)
    h.body["metadata"]["annotations"][manual.FREEZE] = "true"
    calls_before = list(h.gke_group.scale_calls)
    h.aws.healthy = False
    await h.run(15)
    assert h.weights == {"aws": 100, "gke": 0}
    assert h.gke_group.scale_calls == calls_before
    assert any(reason == "ManualControl" for reason, _ in h.events)


async def test_force_failover_moves_traffic_then_becomes_a_pin() -> None:
    h = Harness()
    await h.run(5)
    h.body["metadata"]["annotations"][manual.FORCE_FAILOVER] = "gke"
    await h.step()
    assert h.weights == {"aws": 0, "gke": 100}
    annotations = h.body["metadata"]["annotations"]
    assert manual.FORCE_FAILOVER not in annotations
    assert annotations[manual.PIN] == "gke"
    assert h.gke_group.desired >= 1
    await h.run(10)  # aws is healthy, but the pin holds
    assert h.weights == {"aws": 0, "gke": 100}
    h.body["metadata"]["annotations"][manual.RESUME] = "now"
    await h.step()
    annotations = h.body["metadata"]["annotations"]
    assert manual.PIN not in annotations and manual.RESUME not in annotations


async def test_invalid_annotation_freezes_and_warns() -> None:
    h = Harness()
    await h.run(3)
    h.body["metadata"]["annotations"][manual.PIN] = "azure"
    h.aws.healthy = False
    await h.run(10)
    assert h.weights == {"aws": 100, "gke": 0}
    assert any(reason == "InvalidManualControl" for reason, _ in h.events)


async def test_insufficient_capacity_is_reported_as_warning() -> None:
    h = Harness()
    await h.run(5)
    h.gke_group.next_scale_error = InsufficientCapacity("no L4 left", code="ICE")
    h.aws.healthy = False
    await h.run(10)
    assert any(reason == "ScaleInsufficientCapacity" for reason, _ in h.events), h.events


async def test_throttled_scale_up_is_asked_again_while_the_cloud_cannot_be_read() -> None:
    h = Harness()
    await h.run(5)
    # A cloud API storm: the scale call and every describe answer 429.
    h.gke_group.next_scale_error = Throttled("Rate exceeded", code="429")
    h.gke_group.describe_error = Throttled("Rate exceeded", code="429")
    h.aws.healthy = False
    before = len(h.gke_group.scale_calls)
    for _ in range(30):
        await h.step()
        if len(h.gke_group.scale_calls) >= before + 2:
            break
    storm_calls = h.gke_group.scale_calls[before:]
    assert len(storm_calls) >= 2, h.gke_group.scale_calls
    refused, retried = storm_calls[:2]
    assert retried[0] >= refused[0] > h.gke_group.changes[0], storm_calls
    assert h.gke_group.desired == retried[0]  # the second request reached the cloud
    h.gke_group.describe_error = None
    for _ in range(30):
        await h.step()
        if h.weights.get("gke") == 100:
            break
    assert h.weights == {"aws": 0, "gke": 100}


async def test_intent_is_persisted_before_the_scale_call() -> None:
    h = Harness()
    await h.run(5)
    h.aws.healthy = False
    order: list[str] = []
    calls_before = len(h.gke_group.scale_calls)

    async def persist(patch: Mapping[str, str | None]) -> None:
        order.append(f"persist@{len(h.gke_group.scale_calls)}")
        stored = json.loads(str(patch[STATE_ANNOTATION]))
        order.append(f"desired={stored['placements']['gke'].get('desired')}")

    for _ in range(30):
        h.clock[0] += 1
        await reconcile_once(body=h.body, runtime=h.runtime, now=h.clock[0], persist=persist)
        if len(h.gke_group.scale_calls) > calls_before:
            break
    assert f"persist@{calls_before}" in order, order
    assert order[order.index(f"persist@{calls_before}") + 1] == "desired=2", order


async def test_drill_marker_records_the_forced_failover_as_a_drill_then_resume_clears_it() -> None:
    h = Harness()
    await h.run(5)
    annotations = h.body["metadata"]["annotations"]
    annotations[manual.FORCE_FAILOVER] = "gke"
    annotations[manual.DRILL] = "d-1"
    await h.step()
    assert h.weights == {"aws": 0, "gke": 100}
    history = h.body["status"]["history"]
    assert history[0]["reason"] == "Drill", history
    assert (history[0].get("from"), history[0]["to"]) == ("aws", "gke")
    assert "d-1" in history[0]["message"]
    await h.run(3)
    assert [e["reason"] for e in h.body["status"]["history"]].count("Drill") == 1
    h.body["metadata"]["annotations"][manual.RESUME] = "d-1"
    await h.step()
    annotations = h.body["metadata"]["annotations"]
    assert manual.DRILL not in annotations and manual.PIN not in annotations
    assert any(reason == "DrillEnded" for reason, _ in h.events)


async def test_forced_failover_without_drill_marker_is_not_recorded_as_drill() -> None:
    h = Harness()
    await h.run(5)
    h.body["metadata"]["annotations"][manual.FORCE_FAILOVER] = "gke"
    await h.step()
    assert h.weights == {"aws": 0, "gke": 100}
    reasons = [e["reason"] for e in h.body["status"].get("history") or ()]
    assert "Drill" not in reasons


async def test_after_a_pin_is_resumed_the_engine_moves_traffic_back() -> None:
    h = Harness()
    await h.run(5)
    h.body["metadata"]["annotations"][manual.FORCE_FAILOVER] = "gke"
    await h.run(6)  # the engine keeps proposing aws while the pin holds gke
    assert h.weights == {"aws": 0, "gke": 100}
    h.body["metadata"]["annotations"][manual.RESUME] = "now"
    for _ in range(20):
        await h.step()
        if h.weights == {"aws": 100, "gke": 0}:
            break
    assert h.weights == {"aws": 100, "gke": 0}


async def test_a_scale_failure_repeated_pass_after_pass_posts_one_event() -> None:
    h = Harness()
    await h.run(5)
    h.aws.healthy = False  # the standby must grow, and the cloud refuses every call
    refused = 0
    for _ in range(40):
        h.gke_group.next_scale_error = Throttled("Rate exceeded", code="429")
        calls = len(h.gke_group.scale_calls)
        await h.step()
        refused += len(h.gke_group.scale_calls) - calls
        if refused >= 3:
            break
    assert refused >= 3, h.gke_group.scale_calls
    throttled = [reason for reason, _ in h.events if reason == "ScaleThrottled"]
    assert throttled == ["ScaleThrottled"], h.events
    # A different failure of the same placement is news: it gets its own Event.
    h.gke_group.next_scale_error = InsufficientCapacity("no L4 left", code="ICE")
    for _ in range(10):
        await h.step()
        if any(reason == "ScaleInsufficientCapacity" for reason, _ in h.events):
            break
    assert any(reason == "ScaleInsufficientCapacity" for reason, _ in h.events), h.events


async def test_a_spec_change_is_observed_while_a_placement_cannot_be_read() -> None:
    h = Harness()
    await h.run(5)

    async def no_node_summary() -> None:
        return None  # NodeSizedProvider's view: the Node cache has no summary yet

    async def nodes_not_synced() -> NodeObservation:
        raise NodeCacheNotSyncedError("eks.amazonaws.com/nodegroup=gke")

    gke = NodeSizedProvider(
        h.gke_group, observe=no_node_summary, adopt=lambda size: None, sync_wait_s=0.05
    )

    async def gke_cloud() -> Any:
        state = await gke.describe()
        return state.to_observation(placement="gke", at=h.clock[0])

    h.runtime.observers = [
        h.runtime.observers[0],
        PlacementObservers(
            placement="gke", probe=h.gke.probe, nodes=nodes_not_synced, cloud=gke_cloud
        ),
    ]
    h.runtime.providers = {"aws": h.aws_group, "gke": gke}
    h.aws_group.describe_error = Throttled("Rate exceeded", code="429")
    h.body["spec"] = fast_spec(failback_delay_s=7)
    h.body["metadata"]["generation"] = 2
    await h.step()
    status = h.body["status"]
    assert status["observedGeneration"] == 2, status
    assert {c["observedGeneration"] for c in status["conditions"]} == {2}, status["conditions"]
