"""A restarted operator resumes from the persisted engine state and never scales backwards.

The kill trials (tests/faults/test_operator_kill.py) caught a restarted operator sending
the GKE standby its warm size (setSize=1) and then 2 again mid-failover. Two holes, each
tested here: a GKE fixed-size pool's first describe after a restart reports
``initialNodeCount`` (the API does not say a pool's size), which replaced the size the
engine had asked for; and the state annotation lost when the standby was last needed, so
a restarted engine would shrink it at once instead of after SCALE_DOWN_AFTER_S.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from crossfade.engine.observations import NodeObservation, ProviderObservation
from crossfade.handlers.observe import PlacementObservers
from crossfade.handlers.reconcile import STATE_ANNOTATION, PoolRuntime, load_state
from crossfade.handlers.wiring import NodeSizedProvider
from crossfade.providers.base import NodeGroupState, ScaleResult

from .fakes import FakeNodeGroup
from .test_reconcile import Harness


@dataclass
class FixedSizePoolClient:
    """One process's view of a GKE fixed-size pool (as providers/gke.py): the API does not
    report the pool's size, so describe says what this process asked for, or the pool's
    initial size before it asked (or adopted what the Nodes show)."""

    cloud: FakeNodeGroup
    initial_size: int = 0
    requested: int | None = None

    @property
    def name(self) -> str:
        return self.cloud.name

    def adopt_observed_size(self, total: int) -> None:
        if self.requested is None:
            self.requested = total

    async def describe(self) -> NodeGroupState:
        state = await self.cloud.describe()
        size = self.initial_size if self.requested is None else self.requested
        return NodeGroupState(
            desired=size,
            min_size=state.min_size,
            max_size=state.max_size,
            ready=None,
            status=state.status,
            updating=False,
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        self.requested = desired
        return await self.cloud.scale(desired=desired, token=token)


def restart_with_fixed_size_gke(h: Harness) -> None:
    """A new process whose gke provider only knows what the pool's Nodes show."""
    view = FixedSizePoolClient(h.gke_group)
    gke = h.gke_group
    clock = h.clock

    async def nodes() -> NodeObservation:
        return NodeObservation(
            placement="gke",
            at=clock[0],
            ready_nodes=gke.desired,
            total_nodes=gke.desired,
            allocatable_accelerators=gke.desired,
        )

    provider = NodeSizedProvider(view, observe=nodes, adopt=view.adopt_observed_size)

    async def cloud() -> ProviderObservation:
        state = await provider.describe()
        return state.to_observation(placement="gke", at=clock[0])

    aws_observers = h.runtime.observers[0]
    gke_observers = PlacementObservers(placement="gke", probe=h.gke.probe, nodes=nodes, cloud=cloud)
    h.runtime = PoolRuntime(
        observers=[aws_observers, gke_observers],
        providers={"aws": h.aws_group, "gke": provider},
        routers=[h.router],
    )


def restart(h: Harness) -> None:
    """A new operator process: the same object (annotations + status), no memory."""
    h.runtime = PoolRuntime(
        observers=list(h.runtime.observers),
        providers=dict(h.runtime.providers),
        routers=[h.router],
    )


async def settle_until(h: Harness, weights: dict[str, int], *, passes: int = 40) -> None:
    for _ in range(passes):
        await h.step()
        if h.weights == weights:
            return
    raise AssertionError(f"weights {h.weights}, expected {weights}")


async def fail_over_and_back(h: Harness) -> None:
    """One full outage: aws fails, gke takes the traffic, aws recovers, traffic returns."""
    await h.run(5)
    h.aws.healthy = False
    await settle_until(h, {"aws": 0, "gke": 100})
    h.aws.healthy = True
    await settle_until(h, {"aws": 100, "gke": 0})
    assert h.gke_group.desired == 2, "gke stays grown for a while after the failback"


async def test_restart_at_the_start_of_the_next_outage_does_not_shrink_the_standby() -> None:
    h = Harness()
    await fail_over_and_back(h)
    mark = len(h.gke_group.changes)
    h.aws.healthy = False  # the next outage begins ...
    await h.step()
    restart(h)  # ... and the operator is killed before it detected it
    await settle_until(h, {"aws": 0, "gke": 100})
    assert h.gke_group.changes[mark:] == [], "no setSize after the restart: gke holds 2 already"


async def test_restarted_gke_fixed_size_pool_is_not_sent_the_warm_size_again() -> None:
    h = Harness()
    await fail_over_and_back(h)
    mark = len(h.gke_group.changes)
    h.aws.healthy = False
    await h.step()
    restart_with_fixed_size_gke(h)
    await settle_until(h, {"aws": 0, "gke": 100})
    assert h.gke_group.changes[mark:] == [], "gke holds 2 nodes: no setSize after the restart"


async def test_restart_after_a_failback_keeps_the_scale_down_delay() -> None:
    h = Harness()
    await fail_over_and_back(h)
    restart(h)
    await h.run(10)
    assert h.gke_group.desired == 2, h.gke_group.changes


async def test_release_time_persists_once_and_then_steady_state_writes_nothing() -> None:
    h = Harness()
    await fail_over_and_back(h)
    await h.run(3)
    stored = load_state(h.body["metadata"]["annotations"])
    assert stored is not None
    gke = stored.placements["gke"]
    assert gke.last_needed_at is not None, "when gke stopped being needed is durable"
    assert stored.placements["aws"].last_needed_at is None, "a needed placement's is not"
    writes = h.annotation_writes
    raw = h.body["metadata"]["annotations"][STATE_ANNOTATION]
    await h.run(10)
    assert h.annotation_writes == writes
    assert json.loads(raw) == json.loads(h.body["metadata"]["annotations"][STATE_ANNOTATION])
