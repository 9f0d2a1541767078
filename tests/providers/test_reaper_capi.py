"""Orphan reaper over Cluster API MachineDeployments on a real apiserver (upstream v1.14 CRDs)."""

from __future__ import annotations

import pytest

from crossfade.providers.provisioning import DeletionPolicyTag, OwnershipConflict, node_group_name
from crossfade.providers.reaper import OrphanReaper, ReapAction, ReaperMetrics
from crossfade.testing.capi_controller import CapiTestController
from crossfade.testing.controlplane import TestCluster
from tests.providers.capi_provisioning_support import (
    TEMPLATE,
    ProvisionerFactory,
    capi_prov_namespace,
    capi_templates_cluster,
    controller,
    create_unlabelled,
    machine_deployments,
    machines,
    new_owner,
    new_provisioner,
    provisioner_info_logs,
)
from tests.providers.conformance import capi_conformance_cluster
from tests.providers.conftest import FakeClock

__all__ = [
    "capi_conformance_cluster",
    "capi_prov_namespace",
    "capi_templates_cluster",
    "controller",
    "new_provisioner",
    "provisioner_info_logs",
]

GRACE_S = 600.0


async def test_orphan_with_delete_policy_is_reported_then_deleted_after_grace(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    controller: CapiTestController,
    clock: FakeClock,
) -> None:
    cluster, namespace = capi_conformance_cluster, capi_prov_namespace
    provisioner = await new_provisioner()
    kept, orphan = new_owner("capi-a"), new_owner("capi-b")
    live_group = await provisioner.ensure(
        owner=kept, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    orphan_group = await provisioner.ensure(
        owner=orphan, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    await controller.reconcile_all()
    live = {kept.pool_uid: frozenset({"capi-a"})}  # the orphan's pool was deleted
    metrics = ReaperMetrics()
    reaper = OrphanReaper(
        provisioner=provisioner,
        target=namespace,
        grace_period_s=GRACE_S,
        clock=clock,
        metrics=metrics,
    )

    def orphans(action: ReapAction) -> float | None:
        labels = {"target": namespace, "action": action.value}
        return metrics.registry.get_sample_value("crossfade_orphan_node_groups", labels)

    [first] = await reaper.sweep(live)
    assert first.action is ReapAction.WAITING and first.group.name == orphan_group.name
    assert first.group.owner == orphan and first.group.status == "Running"
    assert orphans(ReapAction.WAITING) == 1
    clock.advance(GRACE_S - 1)
    [waiting] = await reaper.sweep(live)
    assert waiting.action is ReapAction.WAITING
    assert sorted(machine_deployments(cluster, namespace)) == sorted(
        [live_group.name, orphan_group.name]
    )

    clock.advance(1)
    [deleted] = await reaper.sweep(live)
    assert deleted.action is ReapAction.DELETED and orphans(ReapAction.DELETED) == 1
    assert list(machine_deployments(cluster, namespace)) == [live_group.name]
    # Cluster API (here its stand-in) removes the deleted MachineDeployment's Machines.
    await controller.reconcile_all()
    owners = {
        m["metadata"]["labels"]["cluster.x-k8s.io/deployment-name"]
        for m in machines(cluster, namespace)
    }
    assert owners == {live_group.name}
    assert await reaper.sweep(live) == []


async def test_orphan_with_retain_policy_is_only_reported(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    clock: FakeClock,
) -> None:
    provisioner = await new_provisioner()
    group = await provisioner.ensure(
        owner=new_owner(), template=TEMPLATE, deletion_policy=DeletionPolicyTag.RETAIN
    )
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    clock.advance(10 * GRACE_S)
    [finding] = await reaper.sweep({})
    assert finding.action is ReapAction.RETAINED
    assert list(machine_deployments(capi_conformance_cluster, capi_prov_namespace)) == [group.name]


async def test_unlabelled_machine_deployment_of_an_orphans_name_is_never_touched(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    clock: FakeClock,
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    # A team made a MachineDeployment with exactly the name crossfade would use, unlabelled.
    create_unlabelled(capi_conformance_cluster, capi_prov_namespace, name)
    provisioner = await new_provisioner()
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    assert await reaper.sweep({}) == []
    assert await provisioner.list_owned() == []
    with pytest.raises(OwnershipConflict):
        await provisioner.delete_owned(name=name, owner=owner)
    assert list(machine_deployments(capi_conformance_cluster, capi_prov_namespace)) == [name]


async def test_delete_of_a_machine_deployment_already_gone_reports_false(
    capi_prov_namespace: str, new_provisioner: ProvisionerFactory
) -> None:
    provisioner = await new_provisioner()
    owner = new_owner()
    group = await provisioner.ensure(
        owner=owner, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    assert await provisioner.delete_owned(name=group.name, owner=owner)
    assert not await provisioner.delete_owned(name=group.name, owner=owner)
