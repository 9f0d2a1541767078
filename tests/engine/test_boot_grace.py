"""Nodes the engine asked for do not count against minReadyPercent while they boot."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfade.engine import (
    Health,
    NodeObservation,
    Observations,
    PlacementState,
    ProbeOutcome,
    ProbeResult,
    TrafficObservation,
    decide,
)
from crossfade.engine.health import NODE_BOOT_GRACE_S, note_scale_up, observe_health
from crossfade.engine.plan import RecordTransition, ScalePlacement, SetWeights
from crossfade.engine.simulate import (
    CloudModel,
    FaultEvent,
    Scenario,
    ScenarioError,
    scenario_from_mapping,
    simulate,
)
from tests.engine.builders import T0, Driver, healthy_world, of_type, two_placements

POLICY = two_placements(min_ready_percent=50)
SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def _serving_standby(*, ready: int = 1) -> PlacementState:
    state = PlacementState(health=Health.HEALTHY, healthy_since=T0 - 100)
    state.ready_nodes = state.total_nodes = ready
    state.ready_accelerators = ready * 4
    state.desired = ready
    return state


def _see(state: PlacementState, *, ready: int, total: int, now: float) -> list[str]:
    """Feed one node reading and one good probe; return the reasons of health changes."""
    state.ready_nodes, state.total_nodes = ready, total
    state.ready_accelerators = ready * 4
    probe = ProbeResult("b", now, ProbeOutcome.HEALTHY)
    changes = observe_health(
        state, name="b", policy=POLICY, probes=[probe], carries_traffic=True, now=now
    )
    return [change.reason for change in changes]


def test_booting_nodes_we_asked_for_keep_the_placement_healthy() -> None:
    state = _serving_standby()
    note_scale_up(state, now=T0)
    state.desired = 4
    assert _see(state, ready=1, total=4, now=T0 + 30) == []
    assert state.health is Health.HEALTHY


def test_the_same_reading_without_a_scale_up_is_unhealthy() -> None:
    state = _serving_standby()
    state.desired = 4
    assert _see(state, ready=1, total=4, now=T0 + 30) == ["NodesNotReady"]


def test_nodes_still_not_ready_after_the_grace_count_again() -> None:
    state = _serving_standby()
    note_scale_up(state, now=T0)
    state.desired = 4
    assert _see(state, ready=1, total=4, now=T0 + NODE_BOOT_GRACE_S - 1) == []
    assert _see(state, ready=1, total=4, now=T0 + NODE_BOOT_GRACE_S) == ["NodesNotReady"]
    assert "1/4 nodes ready" in state.message


def test_losing_a_node_that_was_ready_before_the_scale_up_is_unhealthy_at_once() -> None:
    state = _serving_standby(ready=2)
    note_scale_up(state, now=T0)
    state.desired = 4
    assert _see(state, ready=0, total=4, now=T0 + 20) == ["NodesNotReady"]
    assert "of 2 ready before the scale-up" in state.message


def test_the_grace_ends_once_every_requested_node_is_ready() -> None:
    state = _serving_standby()
    note_scale_up(state, now=T0)
    state.desired = 4
    assert _see(state, ready=4, total=4, now=T0 + 120) == []
    assert _see(state, ready=1, total=4, now=T0 + 130) == ["NodesNotReady"]


def test_a_second_scale_up_inside_the_grace_keeps_the_first_baseline() -> None:
    state = _serving_standby(ready=2)
    note_scale_up(state, now=T0)
    state.ready_nodes = 3
    note_scale_up(state, now=T0 + 60)
    assert state.ready_before_scale_up == 2
    assert state.scale_up_at == T0 + 60


def test_decide_scales_the_standby_up_without_making_it_unhealthy() -> None:
    world = healthy_world(POLICY)
    driver = Driver(world)
    driver.run(200)  # everyone Healthy, the standby warm with one node
    world.up["a"] = False
    booting_since: float | None = None
    for _ in range(30):
        decision = driver.step()
        for action in of_type(decision.plan, ScalePlacement):
            assert isinstance(action, ScalePlacement)
            if action.placement == "b" and booting_since is None:
                booting_since = driver.now
                world.total["b"] = action.desired  # the new nodes join NotReady
        assert decision.state.placements["b"].health is Health.HEALTHY, decision.state
        assert not decision.state.fail_static
    assert booting_since is not None
    failovers = [
        a
        for _, d in driver.decisions
        for a in of_type(d.plan, RecordTransition)
        if isinstance(a, RecordTransition) and a.reason == "Failover"
    ]
    assert failovers, "traffic should have left the failing primary"


def test_failover_message_never_shows_a_negative_duration() -> None:
    # Readings are stamped by the observer's clock, which may run a moment past ``now``;
    # a zone outage (every node NotReady) makes traffic leave in the decision that saw it.
    policy = two_placements()
    state = None
    now = T0
    for step in range(40):
        ready_a = 0 if step >= 20 else 4
        probes = (
            ProbeResult("a", now + 0.4, ProbeOutcome.HEALTHY),
            ProbeResult("b", now + 0.4, ProbeOutcome.HEALTHY),
        )
        nodes = (
            NodeObservation("a", now + 0.4, ready_a, 4, ready_a * 4),
            NodeObservation("b", now + 0.4, 4, 4, 16),
        )
        decision = decide(policy, state, Observations(probes, nodes), now)
        state = decision.state
        for action in of_type(decision.plan, RecordTransition):
            assert isinstance(action, RecordTransition)
            if action.reason == "Failover":
                assert "unhealthy for 0 s" in action.message, action.message
                assert "-0" not in action.message
                return
        now += 10
    raise AssertionError("no Failover was recorded")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boot_s=st.integers(min_value=20, max_value=400),
    register_fraction=st.floats(min_value=0.0, max_value=1.0),
    outage_at=st.integers(min_value=200, max_value=600),
    standby_nodes=st.integers(min_value=1, max_value=2),
)
def test_a_standby_booting_during_failover_never_causes_fail_static(
    boot_s: int, register_fraction: float, outage_at: int, standby_nodes: int
) -> None:
    policy = two_placements(min_ready_percent=50, warm_standby_nodes=standby_nodes)
    scenario = Scenario(
        name="boot-grace-property",
        description="",
        spec={},
        policy=policy,
        duration_s=outage_at + 900,
        tick_s=10,
        clouds={
            "a": CloudModel(boot_s=boot_s),
            "b": CloudModel(
                boot_s=boot_s,
                register_s=round(boot_s * register_fraction),
                initial_nodes=standby_nodes,
            ),
        },
        events=(FaultEvent(at=outage_at, fault="endpointDown", placement="a"),),
    )
    result = simulate(scenario)
    assert result.first("FailStatic") is None
    assert result.first("NodesNotReady") is None
    assert result.first("Failover") is not None
    assert all(row.health["b"] == "Healthy" for row in result.rows if row.t >= outage_at)


def test_register_seconds_beyond_boot_seconds_is_rejected() -> None:
    data = yaml.safe_load((SCENARIOS / "standby-boot-grace.yaml").read_text())
    data["clouds"]["gke-standby"] = {"bootSeconds": 60, "registerSeconds": 90}
    with pytest.raises(ScenarioError, match="registerSeconds"):
        scenario_from_mapping(data)


def test_the_shipped_scenario_reproduces_the_demo_finding() -> None:
    data = yaml.safe_load((SCENARIOS / "standby-boot-grace.yaml").read_text())
    result = simulate(scenario_from_mapping(data))
    scaled_at = result.first("WarmBeforeShift", placement="gke-standby")
    assert scaled_at is not None
    # The new nodes join NotReady before they boot (the reading that used to trip
    # minReadyPercent): 1 of 4 nodes Ready while 4 are asked for ...
    model = result.scenario.clouds["gke-standby"]
    assert model.register_s is not None and model.register_s < model.boot_s
    booting = [
        row
        for row in result.rows
        if scaled_at + model.register_s <= row.t < scaled_at + model.boot_s
        and row.desired_nodes["gke-standby"] == 4
        and row.ready_accelerators["gke-standby"] == 4
    ]
    assert booting
    # ... and the standby stays Healthy throughout.
    assert all(row.health["gke-standby"] == "Healthy" for row in result.rows if row.t >= 130)


def test_a_new_pool_whose_probes_answer_before_its_nodes_are_read_is_not_fail_static() -> None:
    # The demo's first decision: probes answered, no node reading yet.
    policy = two_placements()
    probes = (
        ProbeResult("a", T0, ProbeOutcome.HEALTHY),
        ProbeResult("b", T0, ProbeOutcome.HEALTHY),
    )
    traffic = TrafficObservation(T0, {"a": 100, "b": 0}, True)
    first = decide(policy, None, Observations(probes, traffic=traffic), T0)
    assert not first.state.fail_static
    assert [a for a in first.plan if getattr(a, "reason", "") == "FailStatic"] == []
    assert of_type(first.plan, SetWeights) == []
    # Once nodes were read and none of them is Ready, that is fail-static as before.
    nodes = (NodeObservation("a", T0 + 10, 0, 4, 0), NodeObservation("b", T0 + 10, 0, 1, 0))
    later = decide(policy, first.state, Observations(nodes=nodes, traffic=traffic), T0 + 10)
    assert later.state.fail_static
    assert later.state.fail_static_reason == "NoReadyCapacity"
