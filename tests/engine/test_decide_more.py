"""decide(): the less travelled rules (quiet failbacks, ICE flush, traffic sync, evidence)."""

from __future__ import annotations

from crossfade.engine import (
    NodeObservation,
    Observations,
    ProbeOutcome,
    ProbeResult,
    ProviderErrorKind,
    ProviderObservation,
    TrafficObservation,
    decide,
)
from crossfade.engine.plan import ConditionType, EmitEvent, RecordTransition, SetCondition

from .builders import PERIOD_S, T0, Driver, healthy_world, three_placements, two_placements


def transitions(driver: Driver) -> list[RecordTransition]:
    return [a for _, d in driver.decisions for a in d.plan if isinstance(a, RecordTransition)]


def test_return_to_a_placement_that_kept_most_weight_is_a_counted_failback() -> None:
    # b is small (one node = 25% of demand) and never grows: a keeps 75% as holdover.
    policy = two_placements(failback_delay_s=60)
    driver = Driver(healthy_world(policy))
    driver.run(100)
    driver.world.up["a"] = False
    driver.run(100)
    assert driver.state is not None and driver.state.weights == {"a": 75, "b": 25}
    driver.world.up["a"] = True
    driver.run(200)
    kinds = [t.reason for t in transitions(driver)]
    assert kinds[:2] == ["Failover", "Failback"]
    assert "FailbackCompleted" in kinds
    assert driver.state.weights == {"a": 100, "b": 0}
    assert len(driver.state.transitions) == 2  # both count against maxFailoversPerHour


def test_ice_entry_is_flushed_once_the_placement_grows_after_its_backoff() -> None:
    policy = three_placements(ice_backoff_s=30)
    driver = Driver(healthy_world(policy))
    driver.run(100)
    driver.world.errors["b"] = ProviderErrorKind.INSUFFICIENT_CAPACITY
    driver.step()
    assert driver.state is not None and "b" in driver.state.ice.entries
    driver.world.errors.pop("b")
    driver.run(20)
    assert "b" in driver.state.ice.entries  # still backing off: no flip-flop
    driver.run(40)
    assert "b" not in driver.state.ice.entries


def test_traffic_synced_condition_follows_the_traffic_reading() -> None:
    policy = two_placements()
    world = healthy_world(policy)

    def synced(traffic: TrafficObservation | None) -> SetCondition:
        base = world.observations(T0)
        observations = Observations(base.probes, base.nodes, base.providers, traffic)
        decision = decide(policy, None, observations, T0)
        found = [
            a
            for a in decision.plan
            if isinstance(a, SetCondition) and a.type is ConditionType.TRAFFIC_SYNCED
        ]
        return found[0]

    assert synced(TrafficObservation(T0, {"a": 100, "b": 0}, True)).reason == "Synced"
    assert synced(TrafficObservation(T0, {"a": 100, "b": 0}, True, drift=True)).reason == "Drift"
    assert synced(TrafficObservation(T0, None, None)).reason == "TrafficUnreadable"
    assert synced(None).status.value == "Unknown"


def test_observer_errors_are_the_evidence_of_fail_static() -> None:
    policy = two_placements()
    driver = Driver(healthy_world(policy))
    driver.run(50)
    later = driver.now + 10 * PERIOD_S
    errors = ("probe loop stalled: 3 timeouts", "node watch disconnected")
    decision = decide(policy, driver.state, Observations(errors=errors), later)
    events = [a for a in decision.plan if isinstance(a, EmitEvent) and a.reason == "FailStatic"]
    assert events and "node watch disconnected" in events[0].message


def test_observation_helpers_pick_per_placement_and_newest() -> None:
    observations = Observations(
        probes=(
            ProbeResult("a", T0 + 20, ProbeOutcome.HEALTHY),
            ProbeResult("b", T0 + 5, ProbeOutcome.FAILING),
            ProbeResult("a", T0 + 10, ProbeOutcome.FAILING),
        ),
        nodes=(NodeObservation("a", T0 + 1, 1, 1, 4), NodeObservation("a", T0 + 2, 2, 2, 8)),
        providers=(ProviderObservation("b", T0, desired=3),),
    )
    assert [p.at for p in observations.probes_for("a")] == [T0 + 10, T0 + 20]
    latest = observations.latest_nodes("a")
    assert latest is not None and latest.ready_nodes == 2
    assert observations.latest_nodes("b") is None
    provider = observations.latest_provider("b")
    assert provider is not None and provider.desired == 3


def test_probes_arriving_out_of_order_are_counted_in_time_order() -> None:
    policy = two_placements(initial_delay_s=0)
    world = healthy_world(policy)
    base = world.observations(T0)
    failing = tuple(
        ProbeResult("a", T0 + t, ProbeOutcome.FAILING, detail="timeout") for t in (30, 10, 20)
    )
    observations = Observations(failing, base.nodes, base.providers, base.traffic)
    state = decide(policy, None, Observations(base.probes, base.nodes, base.providers), T0).state
    decision = decide(policy, state, observations, T0 + 30)
    placement = decision.state.placements["a"]
    assert placement.consecutive_failures == 3
    assert placement.unhealthy_since == T0 + 30
