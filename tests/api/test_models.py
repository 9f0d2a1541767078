"""The pydantic models: defaults, wire names, Python twins of the CEL rules, parse_pool errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import crossfade.api as api
from crossfade.api import InvalidPoolError, parse_pool, parse_spec
from tests.api.samples import ROUTE53, base_pool, example_documents


def test_identity_constants_match_the_adr() -> None:
    assert (api.GROUP, api.VERSION, api.PLURAL, api.KIND) == (
        "crossfade.dev",
        "v1alpha1",
        "inferencepools",
        "InferencePool",
    )
    assert api.SHORT_NAMES == ("cfpool",)
    assert api.InferencePool.model_fields["api_version"].default == api.API_VERSION


@pytest.mark.parametrize(
    "name",
    [
        "InferencePool",
        "InferencePoolSpec",
        "Placement",
        "InferencePoolStatus",
        "PlacementStatus",
        "Condition",
        "HistoryEntry",
        "parse_pool",
    ],
)
def test_adr_names_are_exported(name: str) -> None:
    assert name in api.__all__
    assert getattr(api, name) is not None


def test_defaults_are_filled_in() -> None:
    pool = parse_pool(base_pool())
    spec = pool.spec
    inference = spec.health_check.inference
    assert (inference.path, inference.method, inference.period_seconds) == ("/v1/models", "GET", 10)
    assert (inference.failure_threshold, inference.success_threshold) == (3, 2)
    assert spec.failover.failback_delay_seconds == 600
    assert spec.traffic.mode == api.TrafficMode.ACTIVE_PASSIVE
    assert spec.traffic.step_percent == 25
    assert spec.placements[0].accelerator.resource_name == "nvidia.com/gpu"
    assert spec.deletion_policy == api.DeletionPolicy.RETAIN
    assert spec.paused is False


def test_wire_names_round_trip() -> None:
    body = base_pool()
    body["spec"]["placements"][1]["provider"] = {
        "type": "ClusterAPI",
        "clusterAPI": {
            "kubeconfigSecretRef": {"name": "mgmt"},
            "namespace": "capi",
            "machineDeployment": "md-0",
        },
    }
    wire = parse_pool(body).to_wire()
    provider = wire["spec"]["placements"][1]["provider"]
    assert provider["clusterAPI"]["kubeconfigSecretRef"] == {"name": "mgmt", "key": "value"}
    assert "gatewayAPI" in wire["spec"]["traffic"]
    assert parse_pool(wire).to_wire() == wire


def test_history_uses_from_and_to_on_the_wire() -> None:
    entry = api.HistoryEntry.model_validate(
        {"time": "2026-11-26T10:00:00Z", "from": "aws", "to": "gke", "reason": "FailedOver"}
    )
    assert (entry.from_placement, entry.to_placement) == ("aws", "gke")
    wire = entry.to_wire()
    assert (wire["from"], wire["to"], wire["time"]) == ("aws", "gke", "2026-11-26T10:00:00Z")


def test_status_has_no_kopf_fields() -> None:
    fields = set(api.InferencePoolStatus.model_fields)
    assert not {f for f in fields if "kopf" in f}
    body = base_pool()
    body["status"] = {"kopf": {"progress": {}}}
    with pytest.raises(InvalidPoolError, match=r"status\.kopf"):
        parse_pool(body)


EXAMPLE_POOLS = example_documents(pools_only=True)


def test_every_example_file_holds_a_pool() -> None:
    files = {name.split("/")[0] for name, _ in EXAMPLE_POOLS}
    assert {
        "quickstart.yaml",
        "aws-gke-httproute.yaml",
        "aws-capi-route53.yaml",
        "three-placements.yaml",
    } <= files


@pytest.mark.parametrize(("name", "body"), EXAMPLE_POOLS, ids=[name for name, _ in EXAMPLE_POOLS])
def test_examples_parse(name: str, body: dict[str, Any]) -> None:
    assert parse_pool(body).metadata["name"] == body["metadata"]["name"]


def test_null_fields_count_as_absent_like_in_the_apiserver() -> None:
    body = base_pool()
    body["spec"]["placements"][1]["role"] = None
    body["spec"]["placements"][1]["endpoint"] = None
    placement = parse_pool(body).spec.placements[1]
    assert placement.role == api.Role.STANDBY
    assert placement.endpoint is None


def test_parse_pool_is_strict_about_types() -> None:
    body = base_pool()
    body["spec"]["placements"][0]["nodes"]["max"] = "4"
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(body)
    assert [e.path for e in caught.value.errors] == ["spec.placements[0].nodes.max"]


def test_parse_pool_lists_every_violated_rule_with_its_path() -> None:
    body = base_pool("broken")
    body["metadata"]["namespace"] = "team"
    body["spec"]["placements"][0]["nodes"] = {"min": 5, "max": 4}
    body["spec"]["placements"][1]["provider"]["type"] = "EKSNodeGroup"
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(body)
    paths = {e.path for e in caught.value.errors}
    assert paths == {
        "spec.placements[0].nodes.min",
        "spec.placements[1].provider.eksNodeGroup",
    }
    assert "team/broken" in str(caught.value)
    assert "lower min or raise max" in str(caught.value)


def test_spec_rules_report_at_their_field_path() -> None:
    body = base_pool()
    body["spec"]["placements"][1]["priority"] = 100
    body["spec"]["placements"][1]["role"] = "Primary"
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(body)
    messages = [str(e) for e in caught.value.errors]
    assert any(
        m.startswith("spec.placements: placements[].priority must be unique") for m in messages
    )
    assert any("exactly one placement must have role Primary" in m for m in messages)


def test_parse_spec_reports_paths_under_spec() -> None:
    spec = copy.deepcopy(base_pool()["spec"])
    spec["traffic"] = {"mode": "ActivePassive"}
    with pytest.raises(InvalidPoolError) as caught:
        parse_spec(spec)
    assert [e.path for e in caught.value.errors] == ["spec.traffic"]


def test_route53_layer_accepts_valid_records() -> None:
    body = base_pool()
    body["spec"]["traffic"]["route53"] = copy.deepcopy(ROUTE53)
    route53 = parse_pool(body).spec.traffic.route53
    assert route53 is not None
    assert route53.max_weight == 255
    assert [r.placement for r in route53.records] == ["aws", "gke"]


def test_transition_rules_have_no_python_twin() -> None:
    transition = [r for r in api.Provider.cel_rules if "oldSelf" in r.rule]
    assert transition
    assert all(r.is_transition for r in transition)
    others = [r for r in api.Provider.cel_rules if "oldSelf" not in r.rule]
    assert all(not r.is_transition for r in others)
