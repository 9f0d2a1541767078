"""Every shipped scenario replays through decide() and hits its key moments."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml

from crossfade.engine.simulate import (
    ScenarioError,
    SimulationResult,
    check_expectations,
    scenario_from_mapping,
    simulate,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
FILES = sorted(SCENARIOS.glob("*.yaml"))


@cache
def replay(name: str) -> SimulationResult:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    return simulate(scenario_from_mapping(data))


def test_at_least_eight_scenarios_ship() -> None:
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_expectations_hold(path: Path) -> None:
    result = replay(path.stem)
    assert result.scenario.expect, "a scenario must state its key moments"
    failed = [f"{dict(r.expectation)}: {r.detail}" for r in check_expectations(result) if not r.ok]
    assert not failed, failed
    for row in result.rows:
        assert sum(row.weights.values()) == 100, row


def test_primary_outage_timing_follows_the_formula() -> None:
    result = replay("primary-outage")
    policy = result.scenario.policy
    outage_at = 300
    detect = policy.period_s * policy.failure_threshold
    first_shift = result.first_weight_change(after=outage_at)
    assert first_shift is not None
    assert abs(first_shift - (outage_at + detect + policy.toleration_s)) <= policy.period_s
    # Warm before shift: the first step gives the standby only what its one node serves.
    assert result.row_at(first_shift).weights == {"aws-primary": 75, "gke-standby": 25}
    # Failback no earlier than failbackDelaySeconds after the primary is healthy again.
    healthy_again = next(
        row.t for row in result.rows if row.t > 900 and row.health["aws-primary"] == "Healthy"
    )
    failback = result.first("Failback")
    assert failback is not None and failback - healthy_again >= policy.failback_delay_s


def test_zone_outage_leaves_at_once_and_scales_the_standby_in_the_same_decision() -> None:
    result = replay("zone-outage")
    row = result.row_at(300)
    assert row.weights["aws-primary"] == 0
    assert "scale gke-standby->4" in row.notes


def test_partial_degradation_spills_over_without_a_failover() -> None:
    result = replay("partial-degradation")
    assert result.count("Failover") == 0
    during = result.row_at(600)
    assert during.ready_accelerators["aws-primary"] == 8
    assert during.weights["gke-standby"] == 50
    assert min(row.served_percent for row in result.rows) >= 75.0


def test_flapping_stays_within_the_flap_guard() -> None:
    result = replay("flapping")
    limit = result.scenario.policy.max_failovers_per_hour
    starts = [
        m.t
        for m in result.moments
        if m.kind == "Transition" and m.reason in ("Failover", "Failback")
    ]
    for index, start in enumerate(starts):
        assert len([t for t in starts[index:] if t - start < 3600]) <= limit
    assert result.count("FlapGuard") >= 1


def test_stockout_asks_the_next_placement_in_the_decision_that_saw_the_refusal() -> None:
    result = replay("stockout")
    ice = result.first("InsufficientCapacity")
    asked = result.first("WarmBeforeShift", placement="capi-onprem")
    assert ice is not None and ice == asked
    strikes = [m.message for m in result.moments if m.reason == "InsufficientCapacity"]
    assert [s.split("skipping it for ")[1].split(" s")[0] for s in strikes] == [
        "300",
        "600",
        "1200",
    ]


def test_throttling_delays_the_scale_up_but_not_forever() -> None:
    result = replay("throttling")
    attempts = [
        m.t
        for m in result.moments
        if m.kind == "Scale" and m.placement == "gke-standby" and 300 < m.t <= 400
    ]
    # Retried while throttled, but not on the heels of a refusal: one attempt per two periods.
    assert attempts == [320, 340, 360, 380, 400]
    assert result.row_at(390).desired_nodes["gke-standby"] == 1  # nothing got through
    assert result.row_at(400).desired_nodes["gke-standby"] == 4
    assert result.first("FailoverCompleted") is not None


def test_observer_failure_holds_weights_and_scales_nothing() -> None:
    result = replay("observer-failure")
    start, end = result.first("FailStatic"), result.first("FailStaticCleared")
    assert start is not None and end is not None
    assert not [m for m in result.moments if m.kind == "Scale" and start <= m.t < end]
    assert all(row.fail_static for row in result.rows if start <= row.t < end)


def test_both_down_never_drains_everything() -> None:
    result = replay("both-down")
    assert all(any(w > 0 for w in row.weights.values()) for row in result.rows)
    assert any(row.fail_static for row in result.rows)


def test_capacity_proportional_tracks_ready_accelerators() -> None:
    result = replay("capacity-proportional")
    before, during = result.row_at(200), result.row_at(400)
    assert during.weights["aws-primary"] < before.weights["aws-primary"]
    assert during.ready_accelerators["aws-primary"] == before.ready_accelerators["aws-primary"] // 2


def test_manual_mode_changes_nothing() -> None:
    result = replay("manual-mode")
    assert not [m for m in result.moments if m.kind in ("Scale", "Transition")]
    assert [m for m in result.moments if m.kind == "Proposed"]
    assert all(row.weights == {"aws-primary": 100, "gke-standby": 0} for row in result.rows)


def test_bad_scenarios_are_rejected_with_a_reason() -> None:
    data = yaml.safe_load((SCENARIOS / "primary-outage.yaml").read_text())
    data["events"] = [{"at": 10, "placement": "nowhere", "fault": "endpointDown"}]
    with pytest.raises(ScenarioError, match="unknown placement"):
        scenario_from_mapping(data)
    data["events"] = [{"at": 10, "placement": "aws-primary", "fault": "meteor"}]
    with pytest.raises(ScenarioError, match="unknown fault"):
        scenario_from_mapping(data)
    data["events"] = []
    data["spec"]["placements"][0]["nodes"] = {"min": 5, "max": 1}
    with pytest.raises(ScenarioError, match="nodes"):
        scenario_from_mapping(data)
