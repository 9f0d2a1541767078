"""The orphan reaper loop against a real apiserver (pools, Events) and moto (node groups):
live pools are left alone, orphans become Events on their pool or the Lease and a metric,
and a Delete-policy orphan is deleted after its grace period."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client as k8s
from prometheus_client import CollectorRegistry

from crossfade.api.generate import CRD_PATH
from crossfade.handlers.reaper_loop import (
    ReaperLoop,
    ReaperLoopMetrics,
    ReaperSettings,
    lease_ref,
    live_pools,
)
from crossfade.providers.aws_eks import AwsProviderContext
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    NodeGroupTemplate,
    Owner,
    Provisioner,
)
from crossfade.providers.registry import ProviderContext
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import REPO_ROOT, base_pool
from tests.support.moto_server import aws_env, moto_server

__all__ = ["aws_env", "moto_server"]

pytestmark = pytest.mark.cluster

REGION = "us-east-1"
ACCOUNT = "123456789012"
TEMPLATE = NodeGroupTemplate(
    instance_types=("p5.48xlarge",),
    subnets=("subnet-a",),
    node_role=f"arn:aws:iam::{ACCOUNT}:role/node",
    min_size=0,
    max_size=2,
)


def _templated(cluster: str) -> dict[str, Any]:
    return {
        "name": "aws-standby",
        "priority": 10,
        "role": "Standby",
        "lifecycle": "OnDemand",
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": REGION, "cluster": cluster, "nodegroup": "gpu"},
        },
        "nodes": {"min": 0, "max": 2},
        "backendRef": {"name": "svc-standby", "port": 8000},
        "template": {
            "instanceTypes": ["p5.48xlarge"],
            "subnets": ["subnet-a"],
            "nodeRole": f"arn:aws:iam::{ACCOUNT}:role/node",
        },
    }


@pytest.fixture(scope="module")
def pool_crd(management_cluster: TestCluster) -> TestCluster:
    management_cluster.install_crds([REPO_ROOT / CRD_PATH])
    return management_cluster


async def _events(api: Any, namespace: str, reason: str) -> list[Any]:
    listed = await k8s.CoreV1Api(api).list_namespaced_event(namespace)
    return [event for event in listed.items if event.reason == reason]


async def test_sweep_reports_orphans_on_their_pool_or_the_lease_and_deletes_after_grace(
    pool_crd: TestCluster, namespace: str, moto_server: str, aws_env: None
) -> None:
    cluster = f"prod-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_server).create_cluster(
        name=cluster,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    api = await pool_crd.async_api_client()
    custom: Any = k8s.CustomObjectsApi(api)
    body = base_pool(f"live-{uuid.uuid4().hex[:6]}")
    body["spec"]["placements"].append(_templated(cluster))
    created = await custom.create_namespaced_custom_object(
        "crossfade.dev", "v1alpha1", namespace, "inferencepools", body
    )
    live_uid = created["metadata"]["uid"]
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_server))
    provisioner = provisioner_for(_templated(cluster), context)

    async def make(owner: Owner, policy: DeletionPolicyTag) -> str:
        result = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=policy)
        return result.name

    live = await make(
        Owner(namespace, str(body["metadata"]["name"]), "aws-standby", live_uid),
        DeletionPolicyTag.RETAIN,
    )
    retained = await make(
        Owner(namespace, "gone-retain", "aws-standby", str(uuid.uuid4())), DeletionPolicyTag.RETAIN
    )
    doomed = await make(
        Owner(namespace, "gone-delete", "aws-standby", str(uuid.uuid4())), DeletionPolicyTag.DELETE
    )
    homeless = await make(
        Owner("no-such-namespace", "gone-far", "aws-standby", str(uuid.uuid4())),
        DeletionPolicyTag.RETAIN,
    )
    registry = CollectorRegistry()
    loop = ReaperLoop(
        api_client=api,
        provider_context=context,
        settings=ReaperSettings(interval_s=60.0, grace_period_s=0.0),
        metrics=ReaperLoopMetrics(registry),
        lease=lease_ref(namespace=namespace, name="crossfade-leader"),
        namespaces=(namespace,),
    )
    try:
        findings = await loop.sweep_once()
        by_name = {finding.group.name: finding.action.value for finding in findings}
        assert live not in by_name, "a live pool's node group is no orphan"
        assert by_name == {
            retained: "OrphanRetained",
            doomed: "OrphanDeleted",
            homeless: "OrphanRetained",
        }
        target = f"EKSNodeGroup/{REGION}/{cluster}"
        assert list(loop.reapers) == [target], "one reaper per cloud cluster"
        gauge = registry.get_sample_value(
            "crossfade_orphan_node_groups", {"target": target, "action": "OrphanRetained"}
        )
        assert gauge == 2.0
        sweeps = registry.get_sample_value(
            "crossfade_orphan_reaper_sweeps_total", {"target": target, "outcome": "ok"}
        )
        assert sweeps == 1.0

        on_pools = await _events(api, namespace, "OrphanRetained")
        on_pool = [e for e in on_pools if e.involved_object.kind == "InferencePool"]
        assert [e.involved_object.name for e in on_pool] == ["gone-retain"]
        assert on_pool[0].type == "Warning" and retained in on_pool[0].message
        on_lease = [e for e in on_pools if e.involved_object.kind == "Lease"]
        assert [e.involved_object.name for e in on_lease] == ["crossfade-leader"]
        assert homeless in on_lease[0].message
        assert [e.involved_object.name for e in await _events(api, namespace, "OrphanDeleted")] == [
            "gone-delete"
        ]

        eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
        statuses = {
            name: eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"][
                "status"
            ]
            for name in eks.list_nodegroups(clusterName=cluster)["nodegroups"]
        }
        assert statuses.get(doomed) in (None, "DELETING")
        assert statuses[live] != "DELETING" and statuses[retained] != "DELETING"
    finally:
        await loop.aclose()
        await api.close()


def test_live_pools_maps_uids_to_placement_names() -> None:
    pools: list[dict[str, Any]] = [
        {"metadata": {"uid": "u1"}, "spec": {"placements": [{"name": "a"}, {"name": "b"}]}},
        {"metadata": {}, "spec": {"placements": [{"name": "c"}]}},
    ]
    assert live_pools(pools) == {"u1": frozenset({"a", "b"})}


def test_an_interval_of_zero_turns_the_loop_off() -> None:
    assert not ReaperSettings(interval_s=0).enabled
    assert ReaperSettings().enabled


async def test_the_loop_outlives_a_round_that_fails_unexpectedly(
    pool_crd: TestCluster, namespace: str, moto_server: str, aws_env: None
) -> None:
    api = await pool_crd.async_api_client()
    custom: Any = k8s.CustomObjectsApi(api)
    body = base_pool(f"live-{uuid.uuid4().hex[:6]}")
    body["spec"]["placements"].append(_templated("prod-unreachable"))
    await custom.create_namespaced_custom_object(
        "crossfade.dev", "v1alpha1", namespace, "inferencepools", body
    )
    attempts: list[str] = []
    two_rounds = asyncio.Event()

    def broken_factory(placement: Mapping[str, Any], context: Any) -> Provisioner:
        attempts.append(str(placement["name"]))
        if len(attempts) >= 2:
            two_rounds.set()
        raise RuntimeError("a provisioner factory with a bug")

    loop = ReaperLoop(
        api_client=api,
        provider_context=ProviderContext(),
        settings=ReaperSettings(interval_s=0.05),
        metrics=ReaperLoopMetrics(CollectorRegistry()),
        lease=lease_ref(namespace=namespace, name="crossfade-leader"),
        namespaces=(namespace,),
        build_provisioner=broken_factory,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop=stop))
    try:
        await asyncio.wait_for(two_rounds.wait(), timeout=30)
    finally:
        stop.set()
        await task
        await api.close()
    assert attempts[:2] == ["aws-standby", "aws-standby"], "a second round ran after the first"
    assert task.exception() is None
