"""Placement template and lifecycle: the real apiserver and parse_pool agree, valid or not."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.api import InvalidPoolError, Lifecycle, parse_pool
from tests.api.kube import PoolClient
from tests.api.samples import CAPI_TEMPLATED_PLACEMENT, base_pool

pytestmark = pytest.mark.cluster

TEMPLATE: dict[str, Any] = {
    "instanceTypes": ["a3-highgpu-8g", "a2-ultragpu-8g"],
    "capacityType": "Spot",
    "zones": ["europe-west4-a", "europe-west4-b"],
    "labels": [{"key": "crossfade.dev/workload", "value": "inference"}],
    "taints": [{"key": "nvidia.com/gpu", "value": "present"}],
    "diskSizeGib": 200,
    "nodeRole": "gpu-nodes@my-project.iam.gserviceaccount.com",
}


def _pool(name: str, *, placement: int, **fields: Any) -> dict[str, Any]:
    body = base_pool(name)
    body["spec"]["placements"][placement].update(fields)
    return body


def test_on_demand_standby_with_template_is_accepted_with_agreeing_defaults(
    pools: PoolClient,
) -> None:
    body = _pool("templated", placement=1, template=TEMPLATE, lifecycle="OnDemand")
    reply = pools.dry_run_create(body)
    assert reply.ok, reply.message
    parsed = parse_pool(body)
    assert parsed.spec.placements[1].lifecycle is Lifecycle.ON_DEMAND
    assert reply.body["spec"] == parsed.to_wire()["spec"]
    served = reply.body["spec"]["placements"]
    assert served[0]["lifecycle"] == "AlwaysPresent"
    assert served[1]["template"]["taints"][0]["effect"] == "NoSchedule"


def test_templated_cluster_api_placement_is_accepted_with_agreeing_defaults(
    pools: PoolClient,
) -> None:
    body = base_pool("capi-templated")
    body["spec"]["placements"][1] = CAPI_TEMPLATED_PLACEMENT
    reply = pools.dry_run_create(body)
    assert reply.ok, reply.message
    parsed = parse_pool(body)
    member = parsed.spec.placements[1].provider.cluster_api
    assert member is not None and member.cluster_name == "fleet"
    assert [ref.name for ref in member.infrastructure_templates] == ["gpu-p5", "gpu-p4d"]
    assert reply.body["spec"] == parsed.to_wire()["spec"]


def test_cluster_api_placement_without_template_needs_no_creation_fields(
    pools: PoolClient,
) -> None:
    body = base_pool("capi-plain")
    placement = body["spec"]["placements"][1]
    placement["provider"] = {
        "type": "ClusterAPI",
        "clusterAPI": {
            "kubeconfigSecretRef": {"name": "fleet-kubeconfig"},
            "namespace": "fleet",
            "machineDeployment": "gpu",
        },
    }
    reply = pools.dry_run_create(body)
    assert reply.ok, reply.message
    served = reply.body["spec"]["placements"][1]["provider"]["clusterAPI"]
    assert served["infrastructureTemplates"] == []
    assert reply.body["spec"] == parse_pool(body).to_wire()["spec"]


@pytest.mark.parametrize(
    ("case", "placement", "fields", "api_path", "text"),
    [
        (
            "on-demand-without-template",
            1,
            {"lifecycle": "OnDemand"},
            "spec.placements[1].template",
            "lifecycle OnDemand needs a template",
        ),
        (
            "on-demand-primary",
            0,
            {"lifecycle": "OnDemand", "template": TEMPLATE},
            "spec.placements[0].lifecycle",
            "cannot be OnDemand",
        ),
        (
            "capacity-block-without-reservation",
            1,
            {"template": {**TEMPLATE, "capacityType": "CapacityBlock"}},
            "spec.placements[1].template.capacityReservationId",
            "needs template.capacityReservationId",
        ),
        (
            "no-instance-types",
            1,
            {"template": {**TEMPLATE, "instanceTypes": []}},
            "spec.placements[1].template.instanceTypes",
            "",
        ),
    ],
)
def test_invalid_template_is_rejected_by_server_and_parse_pool(
    pools: PoolClient,
    case: str,
    placement: int,
    fields: dict[str, Any],
    api_path: str,
    text: str,
) -> None:
    body = _pool(case, placement=placement, **fields)
    reply = pools.dry_run_create(body)
    assert not reply.ok, f"{case} was accepted"
    assert api_path in reply.message and text in reply.message, reply.message
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(body)
    paths = [error.path for error in caught.value.errors]
    assert any(path.startswith(api_path) for path in paths), paths


def _without_name(placement: dict[str, Any], member: str, name_field: str) -> dict[str, Any]:
    provider = placement["provider"]
    unnamed = {k: v for k, v in provider[member].items() if k != name_field}
    return {**placement, "provider": {**provider, member: unnamed}}


@pytest.mark.parametrize(
    ("case", "placement", "member", "name_field"),
    [
        ("eks", 0, "eksNodeGroup", "nodegroup"),
        ("gke", 1, "gkeNodePool", "nodePool"),
        ("capi", 1, "clusterAPI", "machineDeployment"),
    ],
)
def test_templated_placement_without_a_node_group_name_is_accepted(
    pools: PoolClient, case: str, placement: int, member: str, name_field: str
) -> None:
    body = base_pool(f"unnamed-{case}")
    placements = body["spec"]["placements"]
    if case == "capi":
        placements[placement] = CAPI_TEMPLATED_PLACEMENT
    else:
        placements[placement] = {**placements[placement], "template": TEMPLATE}
    placements[placement] = _without_name(placements[placement], member, name_field)
    reply = pools.dry_run_create(body)
    assert reply.ok, reply.message
    served = reply.body["spec"]["placements"][placement]["provider"][member]
    assert name_field not in served
    parsed = parse_pool(body)
    assert reply.body["spec"] == parsed.to_wire()["spec"]
    assert name_field not in parsed.to_wire()["spec"]["placements"][placement]["provider"][member]


def test_untemplated_placement_without_a_node_group_name_is_rejected_with_the_fix(
    pools: PoolClient,
) -> None:
    body = base_pool("unnamed-untemplated")
    body["spec"]["placements"][0] = _without_name(
        body["spec"]["placements"][0], "eksNodeGroup", "nodegroup"
    )
    reply = pools.dry_run_create(body)
    assert not reply.ok and reply.status == 422, reply.body
    assert "spec.placements[0].provider.eksNodeGroup.nodegroup: Required value" in reply.message
    assert "name the existing managed node group crossfade scales, or add a template" in (
        reply.message
    )
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(body)
    [error] = caught.value.errors
    assert error.path == "spec.placements[0].provider.eksNodeGroup.nodegroup"
    assert "is required without a template" in error.message
