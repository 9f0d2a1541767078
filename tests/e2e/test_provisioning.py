"""End-to-end provisioning: `crossfade run` creates an OnDemand EKS standby on failover,
deletes it with the pool (deletionPolicy Delete), and its reaper reports an orphan.

The primary is a GKE node pool (GKE test server); the standby is an EKS placement with a
template and ``lifecycle: OnDemand`` whose node group does not exist until the primary fails.
The operator reaches moto through a fault proxy that only records, so the test counts the
CreateNodegroup calls the operator made. Nodes of the created node group appear in the "aws"
apiserver through a NodeSimulator that follows its (deterministic) name.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.providers.aws_eks import AwsProviderContext
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    Owner,
    node_group_name,
    template_from_placement,
)
from crossfade.providers.registry import ProviderContext
from crossfade.testing.aws_faults import FaultProxy
from crossfade.testing.controlplane import TestCluster
from crossfade.testing.inference_server import Behaviour

from .world import (
    ACCOUNT,
    GROUP,
    PLURAL,
    POOL_NAME,
    REGION,
    VERSION,
    Endpoints,
    World,
    create_eks_cluster,
    eks_node_group_desired,
    eks_placement,
    eventually,
    gke_placement,
    pool_body,
    running_world,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 90.0
REAPER_INTERVAL_S = 2


def pool_manifest(namespace: str, *, endpoints: Endpoints, eks_cluster: str) -> dict[str, Any]:
    """GKE primary (2 nodes), EKS OnDemand standby from a template, deletionPolicy Delete."""
    return pool_body(
        namespace,
        [
            gke_placement(
                priority=100,
                role="Primary",
                node_pool=endpoints.node_pool,
                gke_url=endpoints.gke_url,
                min_nodes=1,
            ),
            standby_placement(aws_url=endpoints.aws_url, eks_cluster=eks_cluster),
        ],
        failback_delay_s=600,
        warm_standby_nodes=0,
        deletion_policy="Delete",
    )


def standby_placement(*, aws_url: str, eks_cluster: str) -> dict[str, Any]:
    placement = eks_placement(
        priority=50,
        role="Standby",
        cluster=eks_cluster,
        nodegroup="unused",
        aws_url=aws_url,
        min_nodes=0,
    )
    placement["lifecycle"] = "OnDemand"
    placement["template"] = {
        "instanceTypes": ["g6.xlarge", "g5.xlarge"],
        "subnets": ["subnet-a", "subnet-b"],
        "nodeRole": f"arn:aws:iam::{ACCOUNT}:role/node",
    }
    return placement


@dataclass
class ProvisioningWorld:
    world: World
    proxy: FaultProxy
    eks_cluster: str
    uid: str

    @property
    def created_name(self) -> str:
        return created_name(self.world.namespace, self.uid)

    def eks(self) -> Any:
        return boto3.client("eks", region_name=REGION, endpoint_url=self.world.moto_url)

    def node_group_status(self, name: str) -> str | None:
        try:
            group = self.eks().describe_nodegroup(clusterName=self.eks_cluster, nodegroupName=name)
        except self.eks().exceptions.ResourceNotFoundException:
            return None
        return str(group["nodegroup"]["status"])

    def events(self, reason: str, *, involved: str = POOL_NAME) -> list[str]:
        with self.world.cluster.api_client() as api:
            items = client.CoreV1Api(api).list_namespaced_event(self.world.namespace).items
        return [
            str(e.message)
            for e in items
            if e.reason == reason and e.involved_object.name == involved
        ]

    def pool_exists(self) -> bool:
        try:
            self.world.pool()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def created_name(namespace: str, pool_uid: str) -> str:
    """The name of the standby's first candidate node group (the one created on failover)."""
    owner = Owner(namespace=namespace, pool=POOL_NAME, placement="aws", pool_uid=pool_uid)
    return node_group_name(owner, attempt=0)


def pool_uid(world: World) -> str:
    return str(world.pool()["metadata"]["uid"])


@pytest.fixture
async def provisioning_world(
    e2e_crds: TestCluster,
    cloud_clusters: dict[str, TestCluster],
    namespace: str,
    moto_server: str,
    aws_env: None,
    tmp_path: Path,
) -> AsyncIterator[ProvisioningWorld]:
    eks_cluster = create_eks_cluster(moto_server)
    proxy = FaultProxy(upstream=moto_server).start()
    try:
        async with running_world(
            cluster=e2e_crds,
            cloud_clusters=cloud_clusters,
            namespace=namespace,
            moto_url=moto_server,
            tmp=tmp_path,
            eks_cluster=eks_cluster,
            nodegroup="unused",
            primary="gke",
            pool=lambda endpoints: pool_manifest(
                namespace, endpoints=endpoints, eks_cluster=eks_cluster
            ),
            operator_moto_url=proxy.url,
            simulated_nodegroup=lambda world: created_name(world.namespace, pool_uid(world)),
        ) as world:
            yield ProvisioningWorld(
                world=world,
                proxy=proxy,
                eks_cluster=eks_cluster,
                uid=pool_uid(world),
            )
    finally:
        proxy.stop()


async def leave_orphan(pw: ProvisioningWorld, moto_url: str) -> str:
    """Create the node group a deleted pool ("old-chat", Retain) left in the EKS cluster."""
    placement = standby_placement(aws_url="http://127.0.0.1:1", eks_cluster=pw.eks_cluster)
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_url))
    owner = Owner(
        namespace=pw.world.namespace, pool="old-chat", placement="aws", pool_uid=str(uuid.uuid4())
    )
    result = await provisioner_for(placement, context).ensure(
        owner=owner,
        template=template_from_placement(placement),
        deletion_policy=DeletionPolicyTag.RETAIN,
    )
    return result.name


def placement_field(world: World, name: str, field: str) -> Any:
    for placement in (world.pool().get("status") or {}).get("placements") or ():
        if placement.get("name") == name:
            return placement.get(field)
    return None


def placement_reason(world: World, name: str) -> str | None:
    reason = placement_field(world, name, "reason")
    return None if reason is None else str(reason)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_on_demand_standby_is_created_on_failover_deleted_with_the_pool_and_orphans_reported(
    provisioning_world: ProvisioningWorld, moto_server: str
) -> None:
    pw, world = provisioning_world, provisioning_world.world
    orphan = await leave_orphan(pw, moto_server)
    op = world.operator(extra_args=("--reaper-interval-seconds", str(REAPER_INTERVAL_S)))
    await op.wait_ready()

    # Steady state: all traffic on GKE; the standby is a cold one whose node group does not
    # exist (the engine sees 0 nodes, reason NoNodes).
    await eventually(
        lambda: (
            placement_reason(world, "gke") == "Healthy"
            and placement_reason(world, "aws") == "NoNodes"
        ),
        timeout_s=TIMEOUT_S,
        what="GKE healthy, the cold standby seen with no nodes",
    )
    assert world.route_weights() == {"aws": 0, "gke": 100}
    assert pw.node_group_status(pw.created_name) is None
    assert placement_field(world, "aws", "nodeGroup") is None
    assert pw.proxy.requests("CreateNodegroup") == []

    # The reaper reports the orphan the deleted pool left (an Event on that pool, a metric).
    await eventually(
        lambda: pw.events("OrphanRetained", involved="old-chat"),
        timeout_s=TIMEOUT_S,
        what="OrphanRetained Event on the deleted pool",
    )
    assert orphan in pw.events("OrphanRetained", involved="old-chat")[0]
    retained = metric_value(op.metrics(), "crossfade_orphan_node_groups", action="OrphanRetained")
    assert retained == 1.0

    # Primary fails: the operator creates the standby's node group, scales it, shifts traffic.
    outage_at = time.monotonic()
    world.gke_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    await eventually(
        lambda: pw.proxy.requests("CreateNodegroup"), timeout_s=TIMEOUT_S, what="a create"
    )
    created_at = time.monotonic()
    await eventually(
        lambda: world.route_weights() == {"aws": 100, "gke": 0},
        timeout_s=TIMEOUT_S,
        what="all traffic on the created aws standby",
    )
    shifted_at = time.monotonic()
    # Figures for the report, never asserted (node boot here is the simulator's 1 s).
    print(
        f"\n[e2e] provisioning: outage -> CreateNodegroup {created_at - outage_at:.1f} s, "
        f"outage -> all traffic on the created standby {shifted_at - outage_at:.1f} s"
    )
    assert len(pw.proxy.requests("CreateNodegroup")) == 1, "created exactly once"
    assert pw.node_group_status(pw.created_name) == "ACTIVE"
    assert eks_node_group_desired(moto_server, cluster=pw.eks_cluster, name=pw.created_name) == 2
    assert [m for m in pw.events("NodeGroupCreated") if pw.created_name in m]
    await eventually(
        lambda: placement_field(world, "aws", "nodeGroup") == pw.created_name,
        timeout_s=TIMEOUT_S,
        what="status.placements[aws].nodeGroup",
    )
    created = metric_value(
        op.metrics(), "crossfade_node_group_provisioning_total", outcome="created", placement="aws"
    )
    assert created == 1.0
    assert orphan != pw.created_name and pw.node_group_status(orphan) == "ACTIVE"

    # Delete the pool (deletionPolicy Delete): its created node group goes, the orphan stays.
    world.gke_server.set_behaviour(Behaviour.HEALTHY)
    with world.cluster.api_client() as api:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, world.namespace, PLURAL, POOL_NAME
        )
    await eventually(lambda: not pw.pool_exists(), timeout_s=TIMEOUT_S, what="pool finalized")
    assert pw.node_group_status(pw.created_name) in (None, "DELETING")
    assert pw.node_group_status(orphan) == "ACTIVE", "never another pool's node group"
    assert world.route_weights() == {"aws": 0, "gke": 100}, "traffic left the deleted group"
    assert len(pw.proxy.requests("CreateNodegroup")) == 1
