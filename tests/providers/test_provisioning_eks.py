"""EKS provisioning against moto over HTTP: create, adopt after a crash, ICE fallback, ownership."""

from __future__ import annotations

import boto3
import pytest

from crossfade.providers.errors import InsufficientCapacity
from crossfade.providers.provisioning import (
    DELETION_POLICY_TAG,
    OWNER_PLACEMENT_TAG,
    OWNER_POOL_UID_TAG,
    DeletionPolicyTag,
    OwnershipConflict,
    Provisioner,
    node_group_name,
)
from crossfade.testing import moto_state
from crossfade.testing.aws_faults import Fault, FaultProxy
from tests.providers.conftest import ACCOUNT, REGION
from tests.providers.provisioning_support import (
    TEMPLATE,
    make_provisioner,
    new_cluster,
    new_owner,
    node_group_deletes,
)

RETAIN = DeletionPolicyTag.RETAIN


@pytest.fixture
def cluster(moto_server: str, aws_env: None) -> str:
    return new_cluster(moto_server)


def _nodegroups(moto_server: str, cluster: str) -> list[str]:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
    return list(eks.list_nodegroups(clusterName=cluster)["nodegroups"])


def _describe(moto_server: str, cluster: str, name: str) -> dict[str, object]:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
    return dict(eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"])


async def test_creates_on_demand_with_template_tags_and_token(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    assert isinstance(provisioner, Provisioner)
    owner = new_owner()
    assert _nodegroups(moto_server, cluster) == []
    result = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert result.created and not result.adopted
    assert result.name == node_group_name(owner, attempt=0)
    assert result.instance_type == "p5.48xlarge" and result.skipped_types == ()
    [create] = fault_proxy.requests("CreateNodegroup")
    body = create.json()
    assert body["clientRequestToken"]
    assert body["instanceTypes"] == ["p5.48xlarge"]
    assert body["scalingConfig"] == {"minSize": 1, "maxSize": 4, "desiredSize": 1}
    assert body["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
    ]
    assert body["diskSize"] == 200
    live = _describe(moto_server, cluster, result.name)
    tags = live["tags"]
    assert isinstance(tags, dict)
    assert tags[OWNER_POOL_UID_TAG] == owner.pool_uid
    assert tags[OWNER_PLACEMENT_TAG] == "aws-standby"
    assert tags[DELETION_POLICY_TAG] == "Retain"
    assert _nodegroups(moto_server, cluster) == [result.name]


async def test_restarted_operator_adopts_instead_of_creating_twice(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    owner = new_owner()
    first = await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    # Crash: the status write never happened; a new process knows nothing but the spec.
    second = await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert first.created and second.adopted and not second.created
    assert second.name == first.name
    assert len(fault_proxy.requests("CreateNodegroup")) == 1
    assert _nodegroups(moto_server, cluster) == [first.name]


async def test_lost_create_reply_is_retried_and_adopted(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    owner = new_owner()
    fault_proxy.add(Fault(kind="lost_reply", operation="CreateNodegroup"))
    result = await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    creates = fault_proxy.requests("CreateNodegroup")
    # moto applied the first create; the retry carried the same token and found it in use.
    assert len(creates) == 2
    assert creates[0].json()["clientRequestToken"] == creates[1].json()["clientRequestToken"]
    assert result.adopted and result.name == node_group_name(owner, attempt=0)
    assert _nodegroups(moto_server, cluster) == [result.name]


async def test_create_refused_for_capacity_falls_back_to_next_type(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    owner = new_owner()
    fault_proxy.add(
        Fault(
            kind="server_error",
            operation="CreateNodegroup",
            status=400,
            code="InsufficientInstanceCapacity",
        )
    )
    result = await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert result.created and result.instance_type == "p4d.24xlarge"
    assert result.skipped_types == ("p5.48xlarge",)
    assert result.name == node_group_name(owner, attempt=1)
    sent = [r.json()["instanceTypes"] for r in fault_proxy.requests("CreateNodegroup")]
    assert sent == [["p5.48xlarge"], ["p4d.24xlarge"]]
    assert _nodegroups(moto_server, cluster) == [result.name]


async def test_launch_failure_reported_after_create_moves_to_next_type(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    owner = new_owner()
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    first = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    moto_state.set_nodegroup_ice(region=REGION, cluster=cluster, nodegroup=first.name)
    moto_state.set_nodegroup_status(
        region=REGION, cluster=cluster, nodegroup=first.name, status="CREATE_FAILED"
    )
    second = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert second.created and second.instance_type == "p4d.24xlarge"
    assert second.skipped_types == ("p5.48xlarge",)
    # The failed node group was ours and never served: it is deleted, not left behind.
    [delete] = node_group_deletes(fault_proxy)
    assert delete.path.endswith(f"/node-groups/{first.name}")
    assert _nodegroups(moto_server, cluster) == [second.name]
    # Adopted on the next pass, not created again.
    third = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert third.adopted and third.name == second.name
    assert len(fault_proxy.requests("CreateNodegroup")) == 2


async def test_every_type_out_of_capacity_raises_insufficient_capacity(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    fault_proxy.add(
        Fault(
            kind="server_error",
            operation="CreateNodegroup",
            status=400,
            code="InsufficientInstanceCapacity",
            times=2,
        )
    )
    with pytest.raises(InsufficientCapacity) as caught:
        await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
            owner=new_owner(), template=TEMPLATE, deletion_policy=RETAIN
        )
    assert caught.value.code == "AllInstanceTypesExhausted"
    assert _nodegroups(moto_server, cluster) == []


async def test_untagged_node_group_of_the_same_name_is_never_adopted(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    boto3.client("eks", region_name=REGION, endpoint_url=moto_server).create_nodegroup(
        clusterName=cluster,
        nodegroupName=name,
        subnets=["subnet-a"],
        nodeRole=f"arn:aws:iam::{ACCOUNT}:role/team",
        scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 0},
    )
    with pytest.raises(OwnershipConflict):
        await make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url).ensure(
            owner=owner, template=TEMPLATE, deletion_policy=RETAIN
        )
    assert fault_proxy.requests("CreateNodegroup") == []
    assert node_group_deletes(fault_proxy) == []
    assert _nodegroups(moto_server, cluster) == [name]
