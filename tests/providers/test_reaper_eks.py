"""Orphan reaper against moto: report, delete by policy after the grace period, never untagged."""

from __future__ import annotations

import boto3
import pytest

from crossfade.providers.provisioning import DeletionPolicyTag, OwnershipConflict, node_group_name
from crossfade.providers.reaper import OrphanReaper, ReapAction, ReaperMetrics
from crossfade.testing.aws_faults import FaultProxy
from tests.providers.conftest import ACCOUNT, REGION, FakeClock
from tests.providers.provisioning_support import (
    TEMPLATE,
    make_provisioner,
    new_cluster,
    new_owner,
    node_group_deletes,
)

GRACE_S = 600.0


@pytest.fixture
def cluster(moto_server: str, aws_env: None) -> str:
    return new_cluster(moto_server)


def _nodegroups(moto_server: str, cluster: str) -> list[str]:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
    return sorted(eks.list_nodegroups(clusterName=cluster)["nodegroups"])


async def test_orphan_with_delete_policy_is_reported_then_deleted_after_grace(
    cluster: str, fault_proxy: FaultProxy, moto_server: str, clock: FakeClock
) -> None:
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    kept, orphan = new_owner("aws-a"), new_owner("aws-b")
    live_group = await provisioner.ensure(
        owner=kept, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    orphan_group = await provisioner.ensure(
        owner=orphan, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    live = {kept.pool_uid: frozenset({"aws-a"})}  # orphan's pool was deleted
    metrics = ReaperMetrics()
    reaper = OrphanReaper(
        provisioner=provisioner,
        target=cluster,
        grace_period_s=GRACE_S,
        clock=clock,
        metrics=metrics,
    )

    def orphans(action: ReapAction) -> float | None:
        labels = {"target": cluster, "action": action.value}
        return metrics.registry.get_sample_value("crossfade_orphan_node_groups", labels)

    [first] = await reaper.sweep(live)
    assert orphans(ReapAction.WAITING) == 1 and orphans(ReapAction.DELETED) == 0
    assert first.action is ReapAction.WAITING and first.group.name == orphan_group.name
    assert orphan.pool_uid in first.message
    clock.advance(GRACE_S - 1)
    [waiting] = await reaper.sweep(live)
    assert waiting.action is ReapAction.WAITING and waiting.orphaned_since == first.orphaned_since
    assert node_group_deletes(fault_proxy) == []

    clock.advance(1)
    [deleted] = await reaper.sweep(live)
    assert deleted.action is ReapAction.DELETED
    assert orphans(ReapAction.DELETED) == 1 and orphans(ReapAction.WAITING) == 0
    deleted_total = metrics.registry.get_sample_value(
        "crossfade_orphan_node_groups_deleted_total", {"target": cluster}
    )
    assert deleted_total == 1
    [delete] = node_group_deletes(fault_proxy)
    assert delete.path.endswith(f"/node-groups/{orphan_group.name}")
    assert _nodegroups(moto_server, cluster) == [live_group.name]
    assert await reaper.sweep(live) == []


async def test_renamed_placement_leaves_an_orphan(
    cluster: str, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    owner = new_owner("aws-old")
    await provisioner.ensure(
        owner=owner, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=GRACE_S, clock=clock)
    assert await reaper.sweep({owner.pool_uid: frozenset({"aws-old"})}) == []
    [finding] = await reaper.sweep({owner.pool_uid: frozenset({"aws-new"})})
    assert finding.group.owner == owner and finding.action is ReapAction.WAITING


async def test_orphan_with_retain_policy_is_only_reported(
    cluster: str, fault_proxy: FaultProxy, moto_server: str, clock: FakeClock
) -> None:
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    group = await provisioner.ensure(
        owner=new_owner(), template=TEMPLATE, deletion_policy=DeletionPolicyTag.RETAIN
    )
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    clock.advance(10 * GRACE_S)
    [finding] = await reaper.sweep({})
    assert finding.action is ReapAction.RETAINED
    assert node_group_deletes(fault_proxy) == []
    assert _nodegroups(moto_server, cluster) == [group.name]


async def test_untagged_node_group_of_an_orphans_name_is_never_touched(
    cluster: str, fault_proxy: FaultProxy, moto_server: str, clock: FakeClock
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    # A team made a node group with exactly the name crossfade would use, without our tags.
    boto3.client("eks", region_name=REGION, endpoint_url=moto_server).create_nodegroup(
        clusterName=cluster,
        nodegroupName=name,
        subnets=["subnet-a"],
        nodeRole=f"arn:aws:iam::{ACCOUNT}:role/team",
        scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 0},
        tags={"team": "ml"},
    )
    provisioner = make_provisioner(cluster=cluster, endpoint_url=fault_proxy.url)
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    assert await reaper.sweep({}) == []
    assert await provisioner.list_owned() == []
    with pytest.raises(OwnershipConflict):
        await provisioner.delete_owned(name=name, owner=owner)
    assert node_group_deletes(fault_proxy) == []
    assert _nodegroups(moto_server, cluster) == [name]
