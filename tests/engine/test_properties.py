"""Hypothesis: the invariants of issue 5 over random sequences of world events.

Bounded example counts; the CI profile (tests/conftest.py) derandomizes, so CI replays the
same sequences every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

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
from crossfade.engine.health import is_failed
from crossfade.engine.plan import RecordTransition, ScalePlacement, SetWeights
from crossfade.engine.policy import PlacementPolicy, Role, TrafficMode
from crossfade.engine.state import FLAP_WINDOW_S, Health
from crossfade.engine.weights import WEIGHT_TOTAL

from .builders import T0

NAMES = ("a", "b", "c")


@st.composite
def policies(
    draw: st.DrawFn, *, placements: int | None = None, quick_flaps: bool = False
) -> PoolPolicy:
    count = placements or draw(st.integers(2, 3))
    made = []
    for index in range(count):
        max_nodes = draw(st.integers(1, 4))
        made.append(
            PlacementPolicy(
                NAMES[index],
                100 - index * 10,
                Role.PRIMARY if index == 0 else Role.STANDBY,
                draw(st.integers(0, 1)) if index else 1,
                max_nodes,
                draw(st.sampled_from([1, 4, 8])),
                weight=draw(st.none() | st.integers(1, 5)),
            )
        )
    return PoolPolicy(
        placements=tuple(made),
        period_s=10,
        failure_threshold=draw(st.integers(1, 3)),
        success_threshold=draw(st.integers(1, 3)),
        initial_delay_s=draw(st.sampled_from([0, 20])),
        mode=draw(st.sampled_from(list(TrafficMode))),
        step_percent=draw(st.sampled_from([10, 25, 50, 100])),
        toleration_s=draw(st.sampled_from([0, 10, 30])),
        failback_delay_s=draw(st.sampled_from([60] if quick_flaps else [60, 120, 300])),
        max_failovers_per_hour=draw(st.integers(2, 3) if quick_flaps else st.integers(2, 6)),
        ice_backoff_s=draw(st.sampled_from([20, 60])),
        warm_standby_nodes=draw(st.integers(0, 1)),
    )


# One world change: (kind, placement index, value).
changes = st.tuples(
    st.sampled_from(["down", "up", "nodes", "ice", "ice_clear", "throttle", "observer", "blind"]),
    st.integers(0, 2),
    st.integers(0, 4),
)
# Each tick: how many periods pass (one decision per tick) and what changes before it.
ticks = st.lists(st.tuples(st.integers(1, 3), st.lists(changes, max_size=2)), max_size=60)


@dataclass
class SimWorld:
    policy: PoolPolicy
    ready: dict[str, int] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    error: dict[str, ProviderErrorKind] = field(default_factory=dict)
    weights: dict[str, int] | None = None
    observer: bool = True
    blind_traffic: bool = False

    def __post_init__(self) -> None:
        for p in self.policy.placements:
            self.ready[p.name] = p.max_nodes if p.role is Role.PRIMARY else p.min_nodes
            self.up[p.name] = True

    def change(self, kind: str, index: int, value: int) -> None:
        names = self.policy.names
        name = names[index % len(names)]
        placement = self.policy.placement(name)
        if kind == "down":
            self.up[name] = False
        elif kind == "up":
            self.up[name] = True
        elif kind == "nodes":
            self.ready[name] = min(value, placement.max_nodes)
        elif kind == "ice":
            self.error[name] = ProviderErrorKind.INSUFFICIENT_CAPACITY
        elif kind == "ice_clear":
            self.error.pop(name, None)
        elif kind == "throttle":
            self.error[name] = ProviderErrorKind.THROTTLED
        elif kind == "observer":
            self.observer = bool(value % 2)
        elif kind == "blind":
            self.blind_traffic = bool(value % 2)

    def observe(self, now: float) -> Observations:
        if not self.observer:
            return Observations()
        probes, nodes, providers = [], [], []
        for p in self.policy.placements:
            ready = self.ready[p.name]
            ok = self.up[p.name] and ready > 0
            outcome = ProbeOutcome.HEALTHY if ok else ProbeOutcome.FAILING
            probes.append(ProbeResult(p.name, now, outcome))
            nodes.append(
                NodeObservation(p.name, now, ready, ready, ready * p.accelerators_per_node)
            )
            providers.append(
                ProviderObservation(
                    p.name, now, desired=ready, ready=ready, error=self.error.get(p.name)
                )
            )
        weights = None if self.blind_traffic or self.weights is None else dict(self.weights)
        return Observations(
            tuple(probes), tuple(nodes), tuple(providers), TrafficObservation(now, weights, True)
        )

    def apply(self, decision: Decision) -> None:
        for action in decision.plan:
            if isinstance(action, SetWeights):
                self.weights = dict(action.weights)
            elif isinstance(action, ScalePlacement):
                error = self.error.get(action.placement)
                if error is None:  # instant boot; ICE and throttling refuse
                    self.ready[action.placement] = action.desired
                elif error is ProviderErrorKind.THROTTLED:
                    self.error.pop(action.placement)


@dataclass
class Run:
    world: SimWorld
    steps: list[tuple[float, Observations, PoolState | None, Decision]]


def run(policy: PoolPolicy, script: list[tuple[int, list[tuple[str, int, int]]]]) -> Run:
    world = SimWorld(policy)
    state: PoolState | None = None
    now = T0
    steps = []
    for periods, world_changes in [(1, []), *script]:
        for change in world_changes:
            world.change(*change)
        observations = world.observe(now)
        decision = decide(policy, state, observations, now)
        steps.append((now, observations, state, decision))
        world.apply(decision)
        state = decision.state
        now += periods * policy.period_s
    return Run(world, steps)


BOUNDED = settings(max_examples=150, deadline=None)


@BOUNDED
@given(policy=policies(), script=ticks)
def test_weights_always_sum_to_total_and_are_never_all_zero(policy: PoolPolicy, script) -> None:  # type: ignore[no-untyped-def]
    for _, _, _, decision in run(policy, script).steps:
        weights = decision.state.weights
        if weights is None:  # only before any evidence at all (observer down from the start)
            assert decision.state.fail_static
            assert decision.state.last_good_weights is None
            continue
        assert sum(weights.values()) == WEIGHT_TOTAL
        assert all(w >= 0 for w in weights.values())
        for action in decision.plan:
            if isinstance(action, SetWeights):
                assert sum(action.weights.values()) == WEIGHT_TOTAL


@BOUNDED
@given(policy=policies(), script=ticks)
def test_no_traffic_to_zero_ready_capacity_unless_fail_static(policy: PoolPolicy, script) -> None:  # type: ignore[no-untyped-def]
    for _, observations, _, decision in run(policy, script).steps:
        if decision.state.fail_static:
            continue
        for node in observations.nodes:
            if node.allocatable_accelerators == 0:
                assert (decision.state.weights or {}).get(node.placement, 0) == 0, node


@BOUNDED
@given(policy=policies(), script=ticks)
def test_failback_never_earlier_than_the_delay(policy: PoolPolicy, script) -> None:  # type: ignore[no-untyped-def]
    failed: set[str] = set()
    previous: dict[str, int] = {}
    for now, _, _, decision in run(policy, script).steps:
        state = decision.state
        weights = state.weights or {}
        for name in policy.names:
            placement_state = state.placements[name]
            if weights.get(name, 0) > previous.get(name, 0) and name in failed:
                assert placement_state.health is Health.HEALTHY
                assert placement_state.healthy_since is not None
                assert now - placement_state.healthy_since >= policy.failback_delay_s
                failed.discard(name)
            if is_failed(placement_state, policy=policy, now=now) and not state.fail_static:
                failed.add(name)
        previous = dict(weights)


@BOUNDED
@given(policy=policies(), script=ticks)
def test_discretionary_transitions_respect_the_flap_guard(policy: PoolPolicy, script) -> None:  # type: ignore[no-untyped-def]
    starts: list[tuple[float, str]] = []
    for now, _, _, decision in run(policy, script).steps:
        for action in decision.plan:
            if isinstance(action, RecordTransition) and not action.reason.endswith("Completed"):
                if action.reason != "Failover":
                    recent = [t for t, _ in starts if now - t < FLAP_WINDOW_S]
                    assert not recent or len(recent) + 2 <= policy.max_failovers_per_hour
                starts.append((now, action.reason))


flapping_primary = st.lists(
    st.tuples(
        st.integers(1, 6),
        st.lists(st.tuples(st.sampled_from(["down", "up"]), st.just(0), st.just(0)), max_size=1),
    ),
    max_size=120,
)


@BOUNDED
@given(policy=policies(placements=2, quick_flaps=True), script=flapping_primary)
def test_a_flapping_primary_causes_at_most_max_transitions_per_hour(
    policy: PoolPolicy, script
) -> None:  # type: ignore[no-untyped-def]
    starts = [
        now
        for now, _, _, decision in run(policy, script).steps
        for action in decision.plan
        if isinstance(action, RecordTransition) and not action.reason.endswith("Completed")
    ]
    for index, start in enumerate(starts):
        window = [t for t in starts[index:] if t - start < FLAP_WINDOW_S]
        assert len(window) <= policy.max_failovers_per_hour


@BOUNDED
@given(policy=policies(), script=ticks)
def test_decide_is_deterministic_and_resumes_from_json(policy: PoolPolicy, script) -> None:  # type: ignore[no-untyped-def]
    for now, observations, state, decision in run(policy, script).steps:
        again = decide(policy, state, observations, now)
        assert again == decision
        if state is not None:
            restored = PoolState.from_dict(json.loads(json.dumps(state.to_dict())))
            assert decide(policy, restored, observations, now).plan == decision.plan
