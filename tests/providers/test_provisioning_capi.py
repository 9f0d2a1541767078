"""Cluster API provisioning on a real apiserver with the upstream v1.14 CRDs: create, adopt, ICE."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from crossfade.api import parse_pool
from crossfade.providers.capi import ClusterAPIProvider, MachineDeploymentRef
from crossfade.providers.capi_provisioner import (
    ClusterApiProvisioner,
    MachineDeploymentBlueprint,
    machine_deployment_manifest,
)
from crossfade.providers.errors import InvalidRequest
from crossfade.providers.provisioning import (
    DELETION_POLICY_TAG,
    OWNER_PLACEMENT_TAG,
    OWNER_POOL_UID_TAG,
    DeletionPolicyTag,
    NodeGroupTemplate,
    OwnershipConflict,
    Provisioner,
    node_group_name,
    template_from_placement,
)
from crossfade.testing.capi_controller import CapiTestController
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import CAPI_TEMPLATED_PLACEMENT, base_pool
from tests.providers.capi_provisioning_support import (
    P4D,
    P5,
    TEMPLATE,
    ProvisionerFactory,
    blueprint,
    capi_prov_namespace,
    capi_templates_cluster,
    controller,
    create_unlabelled,
    hold_finalizer,
    infrastructure_ref,
    machine_deployment_creates,
    machine_deployments,
    machines,
    member,
    new_owner,
    new_provisioner,
    provisioner_info_logs,
)
from tests.providers.conformance import capi_conformance_cluster

__all__ = [
    "capi_conformance_cluster",
    "capi_prov_namespace",
    "capi_templates_cluster",
    "controller",
    "new_provisioner",
    "provisioner_info_logs",
]

RETAIN = DeletionPolicyTag.RETAIN


async def test_creates_on_demand_with_ownership_labels_taints_and_bounds(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    controller: CapiTestController,
) -> None:
    cluster, namespace = capi_conformance_cluster, capi_prov_namespace
    provisioner = await new_provisioner()
    assert isinstance(provisioner, Provisioner)
    owner = new_owner()
    posts_before = machine_deployment_creates(cluster)
    result = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert result.created and not result.adopted and result.create_calls == 1
    assert result.name == node_group_name(owner, attempt=0)
    assert result.instance_type == "p5.48xlarge" and result.skipped_types == ()
    assert machine_deployment_creates(cluster) - posts_before == 1

    [stored] = machine_deployments(cluster, namespace).values()
    labels = stored["metadata"]["labels"]
    assert labels[OWNER_POOL_UID_TAG] == owner.pool_uid
    assert labels[OWNER_PLACEMENT_TAG] == "capi-standby"
    assert labels[DELETION_POLICY_TAG] == "Retain"
    annotations = stored["metadata"]["annotations"]
    assert sorted(annotations.values()) == ["1", "4"]
    spec = stored["spec"]
    assert (spec["clusterName"], spec["replicas"]) == ("fleet", 1)
    machine_spec = spec["template"]["spec"]
    assert machine_spec["infrastructureRef"] == infrastructure_ref(P5).to_wire()
    assert machine_spec["bootstrap"]["configRef"]["kind"] == "KubeadmConfigTemplate"
    assert machine_spec["version"] == "v1.33.1"
    assert machine_spec["taints"] == [
        {
            "key": "nvidia.com/gpu",
            "value": "present",
            "effect": "NoSchedule",
            "propagation": "Always",
        },
        {"key": "crossfade.dev/standby", "effect": "NoSchedule", "propagation": "Always"},
    ]
    assert spec["template"]["metadata"]["labels"]["crossfade.dev/workload"] == "inference"

    # The test controller plays Cluster API: Machines appear with the template's labels and
    # the capacity provider built on the created name reads them.
    await controller.reconcile_all()
    [machine] = machines(cluster, namespace)
    assert machine["metadata"]["labels"]["node-role.kubernetes.io/inference"] == ""
    provider = ClusterAPIProvider(
        ref=MachineDeploymentRef(namespace, result.name), api=controller.api
    )
    state = await provider.describe()
    assert (state.desired, state.ready, state.min_size, state.max_size) == (1, 1, 1, 4)


async def test_restarted_operator_adopts_instead_of_creating_twice(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
) -> None:
    owner = new_owner()
    posts_before = machine_deployment_creates(capi_conformance_cluster)
    first = await (await new_provisioner()).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    # Crash between the create and the status write: a new process knows only the spec.
    second = await (await new_provisioner()).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert first.created and not first.adopted
    assert second.adopted and not second.created and second.create_calls == 0
    assert second.name == first.name
    assert list(machine_deployments(capi_conformance_cluster, capi_prov_namespace)) == [first.name]
    assert machine_deployment_creates(capi_conformance_cluster) - posts_before == 1


async def test_two_processes_racing_end_with_one_machine_deployment(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="crossfade.providers.capi_provisioner")
    owner = new_owner()
    one, other = await new_provisioner(), await new_provisioner()
    posts_before = machine_deployment_creates(capi_conformance_cluster)
    results = await asyncio.gather(
        one.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN),
        other.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN),
    )
    # Whether the second saw the first in its list or lost the create with 409 AlreadyExists,
    # exactly one create succeeded and the other adopted it.
    assert sorted((r.created, r.adopted) for r in results) == [(False, True), (True, False)]
    assert {r.name for r in results} == {node_group_name(owner, attempt=0)}
    posts = machine_deployment_creates(capi_conformance_cluster) - posts_before
    assert posts == sum(r.create_calls for r in results)
    assert len(machine_deployments(capi_conformance_cluster, capi_prov_namespace)) == 1
    logged = {record.getMessage() for record in caplog.records}
    assert "capi machine deployment created" in logged
    assert logged & {
        "capi machine deployment adopted",
        "capi machine deployment adopted after create",
    }


async def test_insufficient_capacity_falls_back_to_the_next_infrastructure_template(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    controller: CapiTestController,
) -> None:
    cluster, namespace = capi_conformance_cluster, capi_prov_namespace
    controller.insufficient_capacity_templates = {P5}
    provisioner = await new_provisioner()
    owner = new_owner()
    first = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert first.created and first.instance_type == "p5.48xlarge"
    await controller.reconcile_all()
    [failed] = machines(cluster, namespace)
    assert failed["status"]["phase"] == "Failed"

    second = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert second.created and second.instance_type == "p4d.24xlarge"
    assert second.skipped_types == ("p5.48xlarge",)
    assert second.name == node_group_name(owner, attempt=1)
    # The first MachineDeployment was ours and served nothing: deleted, not left behind.
    stored = machine_deployments(cluster, namespace)
    assert list(stored) == [second.name]
    assert stored[second.name]["spec"]["template"]["spec"]["infrastructureRef"]["name"] == P4D

    await controller.reconcile_all()
    assert [
        m["metadata"]["labels"]["cluster.x-k8s.io/deployment-name"]
        for m in machines(cluster, namespace)
    ] == [second.name]
    third = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert third.adopted and third.name == second.name and third.status == "Running"


async def test_failed_machine_deployment_still_terminating_is_passed_over(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
    controller: CapiTestController,
) -> None:
    cluster, namespace = capi_conformance_cluster, capi_prov_namespace
    controller.insufficient_capacity_templates = {P5}
    provisioner = await new_provisioner()
    owner = new_owner()
    posts_before = machine_deployment_creates(cluster)
    first = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    # Cluster API's finalizer keeps a deleted MachineDeployment until its Machines are gone.
    hold_finalizer(cluster, namespace, first.name)
    await controller.reconcile_all()
    second = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    terminating = machine_deployments(cluster, namespace)[first.name]
    assert terminating["metadata"]["deletionTimestamp"]
    third = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert second.created and second.instance_type == "p4d.24xlarge"
    assert third.adopted and third.name == second.name
    assert machine_deployment_creates(cluster) - posts_before == 2


async def test_unlabelled_machine_deployment_of_the_same_name_is_never_adopted(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    create_unlabelled(capi_conformance_cluster, capi_prov_namespace, name)
    before = machine_deployments(capi_conformance_cluster, capi_prov_namespace)[name]
    posts_before = machine_deployment_creates(capi_conformance_cluster)
    with pytest.raises(OwnershipConflict):
        await (await new_provisioner()).ensure(
            owner=owner, template=TEMPLATE, deletion_policy=RETAIN
        )
    after = machine_deployments(capi_conformance_cluster, capi_prov_namespace)
    assert list(after) == [name]
    assert after[name]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert machine_deployment_creates(capi_conformance_cluster) == posts_before


async def test_another_pools_machine_deployment_is_not_adopted(
    capi_conformance_cluster: TestCluster,
    capi_prov_namespace: str,
    new_provisioner: ProvisionerFactory,
) -> None:
    owner = new_owner()
    provisioner = await new_provisioner()
    await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    impostor = type(owner)(
        namespace=owner.namespace, pool=owner.pool, placement=owner.placement, pool_uid="other"
    )
    with pytest.raises(OwnershipConflict):
        await provisioner.delete_owned(name=node_group_name(owner, attempt=0), owner=impostor)
    assert len(machine_deployments(capi_conformance_cluster, capi_prov_namespace)) == 1


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (
            {"infrastructureTemplates": [infrastructure_ref("absent").to_wire()] * 2},
            "TemplateNotFound",
        ),
        (
            {"bootstrapConfigRef": {**member("x")["bootstrapConfigRef"], "name": "absent"}},
            "TemplateNotFound",
        ),
        (
            {
                "infrastructureTemplates": [
                    {"apiGroup": "infrastructure.example.com", "kind": "GpuBox", "name": P5}
                ]
                * 2
            },
            "TemplateKindNotServed",
        ),
        (
            {
                "infrastructureTemplates": [{**infrastructure_ref(P5).to_wire(), "kind": "GpuBox"}]
                * 2
            },
            "TemplateKindNotServed",
        ),
    ],
    ids=["infrastructure-missing", "bootstrap-missing", "group-not-served", "kind-not-served"],
)
async def test_template_that_does_not_exist_is_refused_before_any_create(
    capi_templates_cluster: TestCluster,
    capi_prov_namespace: str,
    edit: dict[str, Any],
    code: str,
) -> None:
    wire = {**member(capi_prov_namespace), **edit}
    api = await capi_templates_cluster.async_api_client()
    try:
        provisioner = ClusterApiProvisioner(
            blueprint=MachineDeploymentBlueprint.from_member(wire, placement="capi"), api=api
        )
        posts_before = machine_deployment_creates(capi_templates_cluster)
        with pytest.raises(InvalidRequest) as caught:
            await provisioner.ensure(owner=new_owner(), template=TEMPLATE, deletion_policy=RETAIN)
    finally:
        await api.close()
    assert caught.value.code == code
    assert machine_deployment_creates(capi_templates_cluster) == posts_before
    assert machine_deployments(capi_templates_cluster, capi_prov_namespace) == {}


def test_template_of_a_validated_cluster_api_placement_needs_no_node_role() -> None:
    body = base_pool("p")
    body["spec"]["placements"][1] = CAPI_TEMPLATED_PLACEMENT
    wire = parse_pool(body).to_wire()["spec"]["placements"][1]
    template = template_from_placement(wire)
    assert template.instance_types == ("p5.48xlarge", "p4d.24xlarge")
    built = MachineDeploymentBlueprint.from_member(wire["provider"]["clusterAPI"], placement="capi")
    assert [ref.name for ref in built.infrastructure_templates] == ["gpu-p5", "gpu-p4d"]
    assert built.bootstrap_config_ref.kind == "KubeadmConfigTemplate"


def test_blueprint_without_creation_fields_is_an_invalid_request() -> None:
    wire = member("fleet")
    del wire["bootstrapConfigRef"], wire["clusterName"]
    with pytest.raises(InvalidRequest, match="clusterName, bootstrapConfigRef") as caught:
        MachineDeploymentBlueprint.from_member(wire, placement="capi")
    assert caught.value.code == "IncompleteClusterAPITemplate"


async def test_instance_types_and_infrastructure_templates_must_pair_up(
    new_provisioner: ProvisionerFactory,
) -> None:
    one_type = NodeGroupTemplate(
        instance_types=("p5.48xlarge",), subnets=(), node_role="", min_size=0, max_size=1
    )
    with pytest.raises(InvalidRequest) as caught:
        await (await new_provisioner()).ensure(
            owner=new_owner(), template=one_type, deletion_policy=RETAIN
        )
    assert caught.value.code == "InfrastructureTemplateCount"


def test_taint_without_value_leaves_the_value_out() -> None:
    manifest = machine_deployment_manifest(
        name="cf-x",
        blueprint=blueprint("fleet"),
        infrastructure=infrastructure_ref(P5),
        template=TEMPLATE,
        ownership={},
    )
    assert manifest["spec"]["selector"]["matchLabels"].items() <= (
        manifest["spec"]["template"]["metadata"]["labels"].items()
    )
    assert "value" not in manifest["spec"]["template"]["spec"]["taints"][1]
