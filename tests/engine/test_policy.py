"""The engine's policy view reads the API model and camelCase mappings the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crossfade.api import parse_spec
from crossfade.engine.policy import (
    DEFAULT_FAILBACK_DELAY_S,
    PoolPolicy,
    Role,
    TrafficMode,
    policy_from_spec,
)

SCENARIO = Path(__file__).resolve().parents[2] / "examples/scenarios/stockout.yaml"


@pytest.mark.parametrize("path", sorted(SCENARIO.parent.glob("*.yaml")), ids=lambda p: p.stem)
def test_typed_model_path_and_mapping_path_agree(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())["spec"]
    assert policy_from_spec(parse_spec(spec)) == policy_from_spec(spec)


def test_model_view_of_a_three_placement_pool() -> None:
    spec = yaml.safe_load(SCENARIO.read_text())["spec"]
    from_model = policy_from_spec(parse_spec(spec))
    assert from_model.names == ("aws-primary", "gke-standby", "capi-onprem")  # by priority
    assert from_model.preferred.role is Role.PRIMARY
    assert from_model.placement("capi-onprem").accelerators_per_node == 8
    assert from_model.demand_accelerators == 16  # absent = preferred max x perNode


def test_defaults_fill_a_minimal_spec() -> None:
    policy = policy_from_spec(
        {"placements": [{"name": "x", "priority": 1, "role": "Primary", "nodes": {"max": 2}}]}
    )
    assert policy.mode is TrafficMode.ACTIVE_PASSIVE
    assert policy.failback_delay_s == DEFAULT_FAILBACK_DELAY_S
    assert policy.demand_accelerators == 2
    assert policy_from_spec(policy) is policy


def test_demand_and_nodes_for() -> None:
    policy = policy_from_spec(
        {
            "demandAccelerators": 10,
            "placements": [
                {
                    "name": "x",
                    "priority": 1,
                    "role": "Primary",
                    "nodes": {"min": 1, "max": 3},
                    "accelerator": {"perNode": 4},
                }
            ],
        }
    )
    assert isinstance(policy, PoolPolicy)
    placement = policy.preferred
    assert policy.demand_accelerators == 10
    assert placement.nodes_for(10) == 3  # ceil(10/4) = 3
    assert placement.nodes_for(100) == 3  # clamped to max
    assert placement.nodes_for(0) == 1  # clamped to min
