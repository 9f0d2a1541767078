"""A templated placement that names no node group, end to end through wiring.

The API lets a placement with a ``template`` leave out ``eksNodeGroup.nodegroup`` /
``gkeNodePool.nodePool`` (crossfade names what it creates). Here such a pool passes
``parse_pool``, ``build_runtime`` builds its provider without a problem, the provider reads
as a NotProvisioned cold standby, and scaling it creates the node group crossfade names and
then resizes it: EKS over boto3 against moto, GKE with the official client against the GKE
test server. The node observer's labels follow the created node group's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from google.auth.credentials import AnonymousCredentials

from crossfade.api import Provider, parse_pool
from crossfade.handlers.reconcile import PoolRuntime
from crossfade.handlers.wiring import SharedClients, build_runtime, registry_provider_factory
from crossfade.probes.node_caches import (
    EKS_NODEGROUP_LABEL,
    GKE_NODEPOOL_LABEL,
    node_labels_for,
)
from crossfade.providers.aws_eks import AwsProviderContext
from crossfade.providers.instrumented import ProviderMetrics
from crossfade.providers.provisioned import (
    NOT_PROVISIONED_STATUS,
    ProvisioningMetrics,
    node_group_of,
    placement_with_node_group,
    provisioned_of,
)
from crossfade.providers.provisioning import Owner, node_group_name
from crossfade.providers.registry import ProviderContext
from crossfade.testing.gke_server import GKEServer, GKEState
from tests.api.samples import base_pool
from tests.support.moto_server import aws_env, moto_server

__all__ = ["aws_env", "moto_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"
GKE_PROJECT = "demo-project"
GKE_LOCATION = "us-central1"
GKE_CLUSTER = "serving"
GKE_PARENT = f"projects/{GKE_PROJECT}/locations/{GKE_LOCATION}/clusters/{GKE_CLUSTER}"
STANDBY = "standby"


def _pool_spec(provider: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """The spec of a valid pool (parse_pool, wire form) whose standby is templated, unnamed."""
    body = base_pool("unnamed")
    body["spec"]["placements"][1] = {
        "name": STANDBY,
        "priority": 50,
        "role": "Standby",
        "provider": provider,
        "nodes": {"min": 0, "max": 4},
        "backendRef": {"name": "svc-standby", "port": 8000},
        "template": template,
        "lifecycle": "OnDemand",
    }
    spec: dict[str, Any] = parse_pool(body).to_wire()["spec"]
    # No management cluster here, so no HTTPRoute to steer: wire the pool without a router.
    del spec["traffic"]["gatewayAPI"]
    return spec


async def _runtime(spec: dict[str, Any], context: ProviderContext, uid: str) -> PoolRuntime:
    clients = SharedClients(
        provider_factory=registry_provider_factory(context),
        provider_context=context,
        provider_metrics=ProviderMetrics(),
        provisioning_metrics=ProvisioningMetrics(),
    )
    runtime, problems = await build_runtime(
        spec=spec, namespace="serving", name="llama", clients=clients, uid=uid
    )
    assert problems == []
    return runtime


@pytest.fixture
def eks_cluster(moto_server: str, aws_env: None) -> str:
    name = f"prod-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_server).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    return name


@pytest.fixture
def gke_state() -> GKEState:
    return GKEState()


@pytest.fixture
def gke_server(gke_state: GKEState) -> Iterator[GKEServer]:
    with GKEServer(gke_state) as running:
        yield running


def _eks_desired(moto_url: str, cluster: str, name: str) -> int:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
    return int(group["scalingConfig"]["desiredSize"])


async def test_unnamed_templated_eks_placement_is_created_and_scaled(
    eks_cluster: str, moto_server: str
) -> None:
    spec = _pool_spec(
        {"type": "EKSNodeGroup", "eksNodeGroup": {"region": REGION, "cluster": eks_cluster}},
        {
            "instanceTypes": ["p5.48xlarge"],
            "subnets": ["subnet-a"],
            "nodeRole": f"arn:aws:iam::{ACCOUNT}:role/node",
        },
    )
    assert "nodegroup" not in spec["placements"][1]["provider"]["eksNodeGroup"]
    uid = str(uuid.uuid4())
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_server))
    runtime = await _runtime(spec, context, uid)
    try:
        standby = runtime.providers[STANDBY]
        assert provisioned_of(standby) is not None and node_group_of(standby) is None
        before = await standby.describe()
        assert (before.status, before.desired) == (NOT_PROVISIONED_STATUS, 0)

        await standby.scale(desired=2, token="t1")
        name = node_group_name(Owner("serving", "llama", STANDBY, uid), attempt=0)
        assert node_group_of(standby) == name
        assert _eks_desired(moto_server, eks_cluster, name) == 2
        await standby.scale(desired=3, token="t2")
        assert _eks_desired(moto_server, eks_cluster, name) == 3
        after = await standby.describe()
        assert after.desired == 3 and after.status != NOT_PROVISIONED_STATUS
        eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
        assert eks.list_nodegroups(clusterName=eks_cluster)["nodegroups"] == [name]
    finally:
        await runtime.close()


async def test_unnamed_templated_gke_placement_is_created_and_scaled(
    gke_server: GKEServer, gke_state: GKEState
) -> None:
    member = {"project": GKE_PROJECT, "location": GKE_LOCATION, "cluster": GKE_CLUSTER}
    spec = _pool_spec(
        {"type": "GKENodePool", "gkeNodePool": member},
        {
            "instanceTypes": ["a3-highgpu-8g"],
            "zones": ["us-central1-a", "us-central1-b"],
            "nodeRole": "nodes@demo-project.iam.gserviceaccount.com",
        },
    )
    assert "nodePool" not in spec["placements"][1]["provider"]["gkeNodePool"]
    uid = str(uuid.uuid4())
    context = ProviderContext(
        gke_endpoint=gke_server.endpoint, gke_credentials=AnonymousCredentials()
    )
    runtime = await _runtime(spec, context, uid)
    try:
        standby = runtime.providers[STANDBY]
        before = await standby.describe()
        assert (before.status, before.desired) == (NOT_PROVISIONED_STATUS, 0)
        assert gke_state.requests_of("POST", f"{GKE_PARENT}/nodePools") == []

        await standby.scale(desired=2, token="t1")
        name = node_group_name(Owner("serving", "llama", STANDBY, uid), attempt=0)
        assert node_group_of(standby) == name
        full_name = f"{GKE_PARENT}/nodePools/{name}"
        assert gke_state.node_count(full_name) == 2
        await standby.scale(desired=4, token="t2")
        assert gke_state.node_count(full_name) == 4
        assert len(gke_state.requests_of("POST", f"{GKE_PARENT}/nodePools")) == 1
    finally:
        await runtime.close()


@pytest.mark.parametrize(
    ("provider", "label"),
    [
        (
            {"type": "EKSNodeGroup", "eksNodeGroup": {"region": REGION, "cluster": "c"}},
            EKS_NODEGROUP_LABEL,
        ),
        (
            {
                "type": "GKENodePool",
                "gkeNodePool": {"project": GKE_PROJECT, "location": "us-central1", "cluster": "c"},
            },
            GKE_NODEPOOL_LABEL,
        ),
    ],
)
def test_node_labels_follow_the_created_node_group_of_an_unnamed_placement(
    provider: dict[str, Any], label: str
) -> None:
    placement = {"name": STANDBY, "provider": provider}
    with pytest.raises(ValueError, match="names no node group"):
        node_labels_for(Provider.model_validate(provider))
    named = placement_with_node_group(placement, "cf-standby-0123456789-0")
    assert node_labels_for(Provider.model_validate(named["provider"])) == {
        label: "cf-standby-0123456789-0"
    }
