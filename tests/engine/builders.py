"""Small builders for engine tests: policies, observations and a stepping driver."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from crossfade.engine import (
    Decision,
    NodeObservation,
    Observations,
    PoolPolicy,
    PoolState,
    ProbeOutcome,
    ProbeResult,
    ProviderErrorKind,
    ProviderObservation,
    TrafficObservation,
    decide,
)
from crossfade.engine.policy import PlacementPolicy, Role

T0 = 1_800_000_000.0
PERIOD_S = 10


def two_placements(**overrides: object) -> PoolPolicy:
    """Primary 'a' (4 nodes x 4 accelerators) and standby 'b' (same size), fast timings."""
    base: dict[str, object] = {
        "placements": (
            PlacementPolicy("a", 100, Role.PRIMARY, 1, 4, 4),
            PlacementPolicy("b", 50, Role.STANDBY, 0, 4, 4),
        ),
        "period_s": PERIOD_S,
        "failure_threshold": 3,
        "success_threshold": 2,
        "initial_delay_s": 0,
        "toleration_s": 30,
        "failback_delay_s": 300,
        "step_percent": 25,
    }
    base.update(overrides)
    return PoolPolicy(**base)  # type: ignore[arg-type]


def three_placements(**overrides: object) -> PoolPolicy:
    placements = (
        PlacementPolicy("a", 100, Role.PRIMARY, 1, 4, 4),
        PlacementPolicy("b", 50, Role.STANDBY, 0, 4, 4),
        PlacementPolicy("c", 10, Role.STANDBY, 0, 2, 8),
    )
    return two_placements(placements=placements, **overrides)


@dataclass
class World:
    """A minimal hand-driven world: per placement ready nodes, endpoint up/down, errors."""

    policy: PoolPolicy
    ready: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, ProviderErrorKind] = field(default_factory=dict)
    weights: dict[str, int] | None = None
    observe: bool = True

    def observations(self, now: float) -> Observations:
        if not self.observe:
            return Observations()
        probes, nodes, providers = [], [], []
        for placement in self.policy.placements:
            name = placement.name
            ready = self.ready.get(name, 0)
            total = self.total.get(name, ready)
            ok = self.up.get(name, True) and ready > 0
            probes.append(
                ProbeResult(name, now, ProbeOutcome.HEALTHY if ok else ProbeOutcome.FAILING)
            )
            nodes.append(
                NodeObservation(name, now, ready, total, ready * placement.accelerators_per_node)
            )
            error = self.errors.get(name)
            providers.append(
                ProviderObservation(
                    name,
                    now,
                    desired=total,
                    ready=total,
                    min_size=placement.min_nodes,
                    max_size=placement.max_nodes,
                    error=error,
                    message="no capacity" if error else "",
                )
            )
        traffic = TrafficObservation(now, dict(self.weights) if self.weights else None, True)
        return Observations(tuple(probes), tuple(nodes), tuple(providers), traffic)


@dataclass
class Driver:
    """Calls decide every period, applies SetWeights to the world, keeps every decision."""

    world: World
    state: PoolState | None = None
    now: float = T0
    decisions: list[tuple[float, Decision]] = field(default_factory=list)
    apply_scaling: bool = False  # True: ScalePlacement boots nodes instantly

    def step(self, seconds: int = PERIOD_S) -> Decision:
        decision = decide(
            self.world.policy, self.state, self.world.observations(self.now), self.now
        )
        self.state = decision.state
        for action in decision.plan:
            weights = getattr(action, "weights", None)
            if weights is not None:
                self.world.weights = dict(weights)
            desired = getattr(action, "desired", None)
            if self.apply_scaling and desired is not None:
                name = action.placement  # type: ignore[attr-defined]
                self.world.ready[name] = self.world.total[name] = desired
        self.decisions.append((self.now, decision))
        self.now += seconds
        return decision

    def run(self, seconds: int) -> list[Decision]:
        return [self.step() for _ in range(seconds // PERIOD_S)]


def healthy_world(policy: PoolPolicy, *, standby_nodes: int = 1) -> World:
    ready = {
        p.name: (p.max_nodes if p.role is Role.PRIMARY else standby_nodes)
        for p in policy.placements
    }
    # The traffic layer already exists, with everything on the preferred placement.
    weights = {p.name: 100 if p is policy.preferred else 0 for p in policy.placements}
    return World(policy=policy, ready=dict(ready), total=dict(ready), weights=weights)


def of_type(actions: Iterable[object], kind: type) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def weights_of(decision: Decision) -> Mapping[str, int] | None:
    return decision.state.weights
