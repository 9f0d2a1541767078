"""decide(): the failover policy, one rule per test, driven through a hand-held world."""

from __future__ import annotations

import copy
import itertools
import re

import pytest

from crossfade.engine import Mode, Observations, PoolState, ProviderErrorKind, decide
from crossfade.engine.decide import SCALE_DOWN_AFTER_S, flap_guard_blocks
from crossfade.engine.plan import (
    ConditionStatus,
    ConditionType,
    EmitEvent,
    RecordTransition,
    ScalePlacement,
    SetCondition,
    SetWeights,
)
from crossfade.engine.policy import PlacementPolicy, Role, TrafficMode
from crossfade.engine.weights import WEIGHT_TOTAL

from .builders import PERIOD_S, T0, Driver, World, healthy_world, three_placements, two_placements

CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def started(policy=None, **world_kw) -> Driver:  # type: ignore[no-untyped-def]
    """A driver whose pool has been healthy for 100 s (standby warm with one node)."""
    world = healthy_world(policy or two_placements(), **world_kw)
    driver = Driver(world)
    driver.run(100)
    return driver


def condition(decision, kind: ConditionType) -> SetCondition:  # type: ignore[no-untyped-def]
    found = [a for a in decision.plan if isinstance(a, SetCondition) and a.type is kind]
    assert len(found) == 1
    return found[0]


def scales(decision, name: str | None = None) -> list[ScalePlacement]:  # type: ignore[no-untyped-def]
    return [
        a
        for a in decision.plan
        if isinstance(a, ScalePlacement) and (name is None or a.placement == name)
    ]


def test_first_decision_sends_everything_to_the_preferred_placement() -> None:
    world = healthy_world(two_placements())
    world.ready["b"] = world.total["b"] = 0
    world.weights = None  # a new route: nothing to read yet
    decision = decide(world.policy, None, world.observations(T0), T0)
    sets = [a for a in decision.plan if isinstance(a, SetWeights)]
    assert sets and sets[0].weights == {"a": 100, "b": 0}
    assert sets[0].reason == "InitialWeights"
    # Warm standby floor: the cold standby is asked for one node straight away.
    assert [(s.placement, s.desired, s.reason) for s in scales(decision)] == [
        ("b", 1, "WarmStandby")
    ]


def test_toleration_then_stepped_warm_before_shift() -> None:
    driver = started()
    driver.world.up["a"] = False
    outage_at = driver.now
    weights: list[tuple[float, dict[str, int]]] = []
    for _ in range(12):
        decision = driver.step()
        assert decision.state.weights is not None
        weights.append((driver.now - PERIOD_S - outage_at, dict(decision.state.weights)))
    # Failures at 0, 10, 20 -> Unhealthy at 20; +30 s toleration -> first shift at 50.
    first_shift = next(t for t, w in weights if w["a"] < 100)
    assert first_shift == 2 * PERIOD_S + 30
    # Warm before shift: b has one node (4 of 16 accelerators) so gets 25%, not more.
    assert dict(weights)[first_shift] == {"a": 75, "b": 25}
    # The standby was scaled up in the decision that saw a turn Unhealthy (t=20).
    t_unhealthy, decision = driver.decisions[-12 + 2]
    assert t_unhealthy - outage_at == 20
    assert [(s.desired, s.reason) for s in scales(decision, "b")] == [(4, "WarmBeforeShift")]


def test_shift_is_stepped_once_per_period() -> None:
    driver = started()
    driver.world.up["a"] = False
    driver.run(50)  # a Unhealthy, toleration over, first step taken
    driver.world.ready["b"] = driver.world.total["b"] = 4  # standby fully booted
    seen = []
    for _ in range(6):
        seen.append(dict(driver.step().state.weights or {}))
    moves = [abs(x["a"] - y["a"]) for x, y in itertools.pairwise(seen)]
    assert max(moves) <= 25
    assert seen[-1] == {"a": 0, "b": 100}
    # A second decision inside the same period does not take another step.
    driver.world.up["a"] = True
    state = driver.state
    assert state is not None
    again = decide(driver.world.policy, state, driver.world.observations(driver.now), driver.now)
    assert not [a for a in again.plan if isinstance(a, SetWeights)]


def test_transition_is_recorded_with_reason_and_evidence() -> None:
    driver = started()
    driver.world.up["a"] = False
    driver.world.ready["b"] = driver.world.total["b"] = 4
    records = []
    for _ in range(12):
        records += [a for a in driver.step().plan if isinstance(a, RecordTransition)]
    assert [r.reason for r in records] == ["Failover", "FailoverCompleted"]
    first = records[0]
    assert (first.from_placement, first.to_placement) == ("a", "b")
    assert "3 consecutive failed probes" in first.message
    assert "tolerationSeconds 30" in first.message
    assert "16 ready accelerators" in first.message
    assert records[1].duration_seconds > 0


def test_zero_ready_capacity_is_evacuated_at_once() -> None:
    driver = started()
    driver.world.ready["a"] = 0  # every node NotReady (zone outage)
    decision = driver.step()
    assert decision.state.weights == {"a": 0, "b": 100}
    assert [a.reason for a in decision.plan if isinstance(a, SetWeights)] == ["NoReadyCapacity"]
    assert [(s.placement, s.desired) for s in scales(decision)] == [("b", 4)]


def test_ice_asks_the_next_placement_in_the_same_decision_and_backs_off() -> None:
    policy = three_placements(ice_backoff_s=100)
    driver = started(policy)
    driver.world.up["a"] = False
    driver.run(30)  # a Unhealthy at +20: b asked for 4 nodes
    driver.world.errors["b"] = ProviderErrorKind.INSUFFICIENT_CAPACITY
    decision = driver.step()
    events = [a for a in decision.plan if isinstance(a, EmitEvent)]
    assert any(e.reason == "InsufficientCapacity" and "100 s" in e.message for e in events)
    # c (2 nodes x 8) covers what b cannot: 16 - 4 ready on b = 12 -> 2 nodes.
    assert [(s.placement, s.desired) for s in scales(decision, "c")] == [("c", 2)]
    state = decision.state
    assert state.ice.is_unavailable("b", now=driver.now)
    # Still refused after the backoff: the second strike doubles it.
    driver.run(100)
    assert state.ice.strikes("b") == 1
    assert driver.state is not None and driver.state.ice.strikes("b") == 2
    entry = driver.state.ice.entries["b"]
    assert entry.until - (driver.now - PERIOD_S) <= 200


def test_fail_static_when_observations_go_missing() -> None:
    driver = started()
    before = dict(driver.state.weights or {})  # type: ignore[union-attr]
    driver.world.observe = False
    decisions = driver.run(60)
    static = [d for d in decisions if d.state.fail_static]
    assert static, "fail-static never raised"
    for d in static:
        assert d.state.weights == before
        assert not [a for a in d.plan if isinstance(a, (SetWeights, ScalePlacement))]
        assert condition(d, ConditionType.FAIL_STATIC).status is ConditionStatus.TRUE
        assert condition(d, ConditionType.FAIL_STATIC).reason == "ObservationsMissing"
    driver.world.observe = True
    cleared = driver.step()
    assert not cleared.state.fail_static
    assert any(isinstance(a, EmitEvent) and a.reason == "FailStaticCleared" for a in cleared.plan)


def test_everything_unhealthy_holds_last_known_good_weights() -> None:
    driver = started()
    driver.world.up["a"] = driver.world.up["b"] = False
    decisions = driver.run(200)
    assert decisions[-1].state.fail_static
    assert decisions[-1].state.fail_static_reason == "AllPlacementsUnhealthy"
    for d in decisions:
        assert d.state.weights == {"a": 100, "b": 0}


def test_failback_waits_for_the_delay_then_steps_back() -> None:
    driver = started()
    driver.world.up["a"] = False
    driver.world.ready["b"] = driver.world.total["b"] = 4
    driver.run(200)
    assert driver.state is not None and driver.state.weights == {"a": 0, "b": 100}
    driver.world.up["a"] = True
    decisions = driver.run(600)
    healthy_at = next(
        t
        for t, d in driver.decisions
        if d.state.placements["a"].health.value == "Healthy" and t > T0 + 300
    )
    moved_at = next(
        t for t, d in driver.decisions if t > healthy_at and (d.state.weights or {})["a"] > 0
    )
    assert moved_at - healthy_at == driver.world.policy.failback_delay_s
    assert decisions[-1].state.weights == {"a": 100, "b": 0}
    waiting = condition(decisions[10], ConditionType.FAILING_OVER)
    assert "failbackDelaySeconds" in waiting.message


def test_flap_guard_truth_table() -> None:
    assert not flap_guard_blocks(kind="Failover", recent=99, limit=1)
    assert not flap_guard_blocks(kind="Failback", recent=0, limit=1)
    assert flap_guard_blocks(kind="Failback", recent=1, limit=2)
    assert not flap_guard_blocks(kind="Failback", recent=2, limit=4)
    assert flap_guard_blocks(kind="Failback", recent=3, limit=4)
    assert flap_guard_blocks(kind="Rebalance", recent=3, limit=4)


def test_flap_guard_holds_failback_and_says_so() -> None:
    policy = two_placements(failback_delay_s=60, max_failovers_per_hour=3)
    driver = started(policy)
    driver.world.ready["b"] = driver.world.total["b"] = 4
    for _ in range(3):  # three outages of a in quick succession
        driver.world.up["a"] = False
        driver.run(120)
        driver.world.up["a"] = True
        driver.run(200)
    records = [
        a.reason
        for _, d in driver.decisions
        for a in d.plan
        if isinstance(a, RecordTransition) and not a.reason.endswith("Completed")
    ]
    assert records.count("Failback") == 1  # the second failback would exceed the guard
    assert len(records) <= 3
    guard = [
        (t, a)
        for t, d in driver.decisions
        for a in d.plan
        if isinstance(a, EmitEvent) and a.reason == "FlapGuard"
    ]
    assert guard and "maxFailoversPerHour 3" in guard[0][1].message
    # One Event per hold (a holds twice here, a new outage in between), not one per decision.
    times = [t for t, _ in guard]
    assert len(times) == 2 and times[1] - times[0] > 100
    assert driver.state is not None and driver.state.weights == {"a": 0, "b": 100}


@pytest.mark.parametrize(("field", "mode"), [("paused", Mode.PAUSED), ("automatic", Mode.MANUAL)])
def test_paused_and_manual_propose_but_do_not_act(field: str, mode: str) -> None:
    value = field == "paused"  # paused=True, or automatic=False
    policy = two_placements(**{field: value})
    driver = started(policy)
    driver.world.up["a"] = False
    driver.world.ready["b"] = driver.world.total["b"] = 4
    decisions = driver.run(200)
    assert all(d.mode == mode for d in decisions)
    for d in decisions:
        assert not [
            a for a in d.plan if isinstance(a, (SetWeights, ScalePlacement, RecordTransition))
        ]
        assert d.state.weights == {"a": 100, "b": 0}
    proposed = [a for d in decisions for a in d.proposed if isinstance(a, SetWeights)]
    assert proposed, "nothing was proposed"
    notes = [a for d in decisions for a in d.plan if isinstance(a, EmitEvent)]
    assert any(n.reason == "RecommendationOnly" and "would do" in n.message for n in notes)
    # Reported once per new recommendation, not every decision.
    assert len([n for n in notes if n.reason == "RecommendationOnly"]) < len(decisions) / 2


def test_scale_down_only_after_traffic_left_and_stayed_away() -> None:
    policy = two_placements(failback_delay_s=60)
    driver = started(policy)
    driver.apply_scaling = True
    driver.world.up["a"] = False
    driver.run(200)
    assert driver.world.total["b"] == 4
    driver.world.up["a"] = True
    driver.run(1000)
    downs = [
        (t, s) for t, d in driver.decisions for s in scales(d, "b") if s.reason == "TrafficLeft"
    ]
    assert len(downs) == 1
    t_down, action = downs[0]
    assert action.desired == 1  # the warm standby floor, not zero
    last_traffic = max(t for t, d in driver.decisions if (d.state.weights or {}).get("b", 0) > 0)
    assert t_down - last_traffic >= SCALE_DOWN_AFTER_S


def test_throttled_scale_is_retried_next_period() -> None:
    driver = started()
    driver.world.up["a"] = False
    driver.run(10)
    driver.world.errors["b"] = ProviderErrorKind.THROTTLED
    first = driver.step()  # a turns Unhealthy now, but b's API is throttling
    assert not scales(first, "b")
    driver.world.errors.pop("b")
    second = driver.step()
    assert [(s.desired, s.reason) for s in scales(second, "b")] == [(4, "WarmBeforeShift")]


def test_capacity_proportional_and_weighted_modes() -> None:
    placements = (
        PlacementPolicy("a", 100, Role.PRIMARY, 1, 4, 4),
        PlacementPolicy("b", 50, Role.STANDBY, 0, 4, 4, weight=3),
        PlacementPolicy("c", 10, Role.STANDBY, 0, 4, 4, weight=1),
    )
    cap = two_placements(
        placements=placements, mode=TrafficMode.CAPACITY_PROPORTIONAL, demand_accelerators=48
    )
    world = World(cap, ready={"a": 4, "b": 2, "c": 2}, total={"a": 4, "b": 2, "c": 2})
    driver = Driver(world)
    assert driver.run(200)[-1].state.weights == {"a": 50, "b": 25, "c": 25}
    weighted = two_placements(
        placements=placements, mode=TrafficMode.WEIGHTED, demand_accelerators=16
    )
    world = World(weighted, ready={"a": 4, "b": 4, "c": 4}, total={"a": 4, "b": 4, "c": 4})
    # a has no weight field: counts 1; b 3; c 1 -> 20/60/20.
    assert Driver(world).run(200)[-1].state.weights == {"a": 20, "b": 60, "c": 20}


def test_deterministic_and_does_not_mutate_its_input() -> None:
    driver = started()
    driver.world.up["a"] = False
    driver.run(40)
    state = driver.state
    assert state is not None
    snapshot = copy.deepcopy(state.to_dict())
    observations = driver.world.observations(driver.now)
    one = decide(driver.world.policy, state, observations, driver.now)
    two = decide(driver.world.policy, state, observations, driver.now)
    assert one == two
    assert state.to_dict() == snapshot


def test_every_action_has_a_camel_case_reason_and_a_message() -> None:
    driver = started(three_placements())
    driver.world.up["a"] = False
    driver.run(60)
    driver.world.errors["b"] = ProviderErrorKind.INSUFFICIENT_CAPACITY
    driver.run(100)
    driver.world.observe = False
    driver.run(60)
    for _, decision in driver.decisions:
        for action in decision.plan:
            assert CAMEL.match(action.reason), action
            assert action.message, action


def test_removed_placement_is_forgotten_and_weights_renormalised() -> None:
    driver = started(three_placements())
    state = driver.state
    assert state is not None
    smaller = two_placements()
    world = healthy_world(smaller)
    decision = decide(smaller, state, world.observations(driver.now), driver.now)
    assert set(decision.state.placements) == {"a", "b"}
    assert decision.state.weights is not None
    assert sum(decision.state.weights.values()) == WEIGHT_TOTAL


def test_a_new_pool_without_evidence_writes_no_weights() -> None:
    decision = decide(two_placements(), PoolState(), Observations(), T0)
    assert decision.state.weights is None
    assert decision.state.fail_static
    assert not [a for a in decision.plan if isinstance(a, SetWeights)]


def _first_step(driver: Driver) -> float:
    """Decide once a second until the weights change; return when that decision was taken."""
    before = dict(driver.world.weights or {})
    for _ in range(600):
        decision = driver.step(1)
        if decision.state.weights != before:
            return driver.now - 1
    raise AssertionError("the weights never changed")


def test_failover_step_is_taken_by_a_probe_result_arriving_early() -> None:
    # Probe results arrive on a schedule jittered by +-10%; the pass such a result wakes 0.9
    # of a period after the previous step must take the next Failover step, not leave it
    # for the pass after (up to one more whole period later).
    driver = started()
    driver.world.ready["b"] = driver.world.total["b"] = 4
    driver.world.up["a"] = False
    stepped_at = _first_step(driver)
    after_first = dict(driver.world.weights or {})
    assert 0 < after_first["a"] < 100
    driver.step(int(stepped_at + 0.9 * PERIOD_S - driver.now))
    assert driver.now == stepped_at + 0.9 * PERIOD_S
    assert dict(driver.world.weights or {}) == after_first  # nothing earlier than that
    decision = driver.step()
    assert decision.state.weights is not None
    assert decision.state.weights["a"] < after_first["a"]


def test_failback_steps_keep_the_full_period() -> None:
    driver = started()
    driver.world.ready["b"] = driver.world.total["b"] = 4
    driver.world.up["a"] = False
    driver.run(200)
    assert driver.world.weights == {"a": 0, "b": 100}
    driver.world.up["a"] = True
    stepped_at = _first_step(driver)
    after_first = dict(driver.world.weights or {})
    assert 0 < after_first["a"] < 100
    driver.step(int(stepped_at + 0.9 * PERIOD_S - driver.now))
    driver.step()  # 0.9 of a period after the first failback step: not due yet
    assert driver.world.weights == after_first
    driver.step()  # a full period after it
    assert (driver.world.weights or {})["a"] > after_first["a"]


def test_first_failback_step_is_written_as_a_failback() -> None:
    # The pass that records the Failback also takes its first step; that step's SetWeights
    # (the route's write log and the TrafficStep Event) must say Failback, not Rebalance.
    driver = started()
    driver.world.ready["b"] = driver.world.total["b"] = 4
    driver.world.up["a"] = False
    driver.run(200)
    assert driver.world.weights == {"a": 0, "b": 100}
    driver.world.up["a"] = True
    driver.run(600)
    first = next(
        d
        for _, d in driver.decisions
        if any(isinstance(a, RecordTransition) and a.reason == "Failback" for a in d.plan)
    )
    writes = [a for a in first.plan if isinstance(a, SetWeights)]
    assert len(writes) == 1 and writes[0].weights["a"] > 0
    assert writes[0].reason == "Failback"
    steps = [a for a in first.plan if isinstance(a, EmitEvent) and a.reason == "TrafficStep"]
    assert [e.message.split(":")[0] for e in steps] == ["Failback"]
