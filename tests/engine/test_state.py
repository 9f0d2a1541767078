"""PoolState survives JSON (status/annotation) and a restart resumes the same decisions."""

from __future__ import annotations

import json

import pytest

from crossfade.engine import PoolState, decide
from crossfade.engine.state import Health, PlacementState

from .builders import Driver, healthy_world, two_placements


def test_empty_state_round_trips() -> None:
    state = PoolState()
    assert PoolState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_placement_state_uses_camel_case_keys() -> None:
    data = PlacementState(health=Health.HEALTHY, consecutive_failures=2).to_dict()
    assert data["health"] == "Healthy"
    assert data["consecutiveFailures"] == 2
    assert "consecutive_failures" not in data


def test_unknown_schema_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="schemaVersion"):
        PoolState.from_dict({"schemaVersion": 99})


def test_restart_from_json_resumes_identically() -> None:
    policy = two_placements()
    world = healthy_world(policy)
    driver = Driver(world)
    driver.run(100)
    world.up["a"] = False
    driver.run(60)  # mid-failover: counters, shift and ICE state in flight
    assert driver.state is not None
    restored = PoolState.from_dict(json.loads(json.dumps(driver.state.to_dict())))
    assert restored == driver.state
    observations = world.observations(driver.now)
    straight = decide(policy, driver.state, observations, driver.now)
    resumed = decide(policy, restored, observations, driver.now)
    assert resumed.plan == straight.plan
    assert resumed.state.to_dict() == straight.state.to_dict()
