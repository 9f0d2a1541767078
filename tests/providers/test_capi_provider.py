"""Cluster API provider against a real apiserver with the upstream Cluster API CRDs installed."""

from __future__ import annotations

import base64
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from kubernetes import client as sync_client
from kubernetes_asyncio import client

from crossfade.providers.capi import ClusterAPIProvider, MachineDeploymentRef
from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
)
from crossfade.providers.kubeconfig import api_client_from_kubeconfig, api_client_from_secret
from crossfade.testing.capi_controller import (
    GROUP,
    VERSION,
    CapiTestController,
    machine_deployment,
)
from crossfade.testing.controlplane import TestCluster, upstream_crds
from crossfade.testing.kube_fault_proxy import KubeFaultProxy
from tests.providers.conformance import wait_until_served

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def capi_cluster(cloud_clusters: dict[str, TestCluster]) -> TestCluster:
    cluster = cloud_clusters["gcp"]
    cluster.install_crds(upstream_crds("cluster-api"))
    for plural in ("machinedeployments", "machines"):
        wait_until_served(cluster, group=GROUP, version=VERSION, plural=plural)
    return cluster


@pytest.fixture
def capi_namespace(capi_cluster: TestCluster) -> str:
    name = f"capi-{uuid.uuid4().hex[:8]}"
    with capi_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=name))
        )
    return name


@pytest.fixture
def kubeconfig_secret(
    management_cluster: TestCluster, capi_cluster: TestCluster, namespace: str
) -> str:
    """Store the Cluster API cluster's kubeconfig the way Cluster API does: key ``value``."""
    raw = yaml.safe_dump(capi_cluster.kubeconfig_dict()).encode()
    with management_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            sync_client.V1Secret(
                metadata=sync_client.V1ObjectMeta(name="fleet-kubeconfig"),
                data={"value": base64.b64encode(raw).decode()},
            ),
        )
    return "fleet-kubeconfig"


@pytest.fixture
async def capi_api(
    management_cluster: TestCluster, namespace: str, kubeconfig_secret: str
) -> AsyncIterator[client.ApiClient]:
    management = await management_cluster.async_api_client()
    try:
        api = await api_client_from_secret(management, namespace=namespace, name=kubeconfig_secret)
    finally:
        await management.close()
    yield api
    await api.close()


def create_deployment(cluster: TestCluster, namespace: str, **kwargs: Any) -> dict[str, Any]:
    with cluster.api_client() as api:
        created: dict[str, Any] = sync_client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, "machinedeployments", machine_deployment(**kwargs)
        )
    return created


def machine_names(cluster: TestCluster, namespace: str) -> list[str]:
    with cluster.api_client() as api:
        listed = sync_client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "machines"
        )
    return sorted(item["metadata"]["name"] for item in listed["items"])


async def test_describe_reads_replicas_bounds_and_readiness(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(
        capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=2, max_size=6
    )
    controller = CapiTestController(api=capi_api, namespace=capi_namespace)
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    before = await provider.describe()
    assert (before.desired, before.min_size, before.max_size, before.ready) == (2, 0, 6, 0)
    assert before.updating
    await controller.reconcile("gpu")
    after = await provider.describe()
    assert (after.desired, after.ready, after.status, after.updating) == (2, 2, "Running", False)
    assert after.health_issues == ()
    assert provider.name == f"capi/{capi_namespace}/gpu"


async def test_scale_goes_through_the_scale_subresource_and_the_controller_follows(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=1)
    controller = CapiTestController(api=capi_api, namespace=capi_namespace)
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    await controller.reconcile("gpu")
    up = await provider.scale(desired=3, token="t1")
    assert (up.changed, up.previous, up.desired, up.writes) == (True, 1, 3, 1)
    during = await provider.describe()
    assert (during.desired, during.ready, during.updating) == (3, 1, True)
    await controller.reconcile("gpu")
    assert len(machine_names(capi_cluster, capi_namespace)) == 3
    assert (await provider.describe()).ready == 3
    down = await provider.scale(desired=1, token="t2")
    assert down.changed
    await controller.reconcile("gpu")
    assert len(machine_names(capi_cluster, capi_namespace)) == 1


async def test_repeat_makes_no_write(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=2)
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    custom = client.CustomObjectsApi(capi_api)
    before = await custom.get_namespaced_custom_object(
        GROUP, VERSION, capi_namespace, "machinedeployments", "gpu"
    )
    result = await provider.scale(desired=2, token="t1")
    after = await custom.get_namespaced_custom_object(
        GROUP, VERSION, capi_namespace, "machinedeployments", "gpu"
    )
    assert not result.changed and result.writes == 0
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_desired_outside_the_autoscaler_bounds_is_refused(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(
        capi_cluster,
        capi_namespace,
        name="gpu",
        cluster_name="f",
        replicas=2,
        min_size=1,
        max_size=3,
    )
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    with pytest.raises(InvalidRequest, match=r"outside 1\.\.3"):
        await provider.scale(desired=4, token="t1")
    with pytest.raises(InvalidRequest):
        await provider.scale(desired=0, token="t2")
    assert (await provider.describe()).desired == 2


async def test_missing_deployment_is_not_found(
    capi_namespace: str, capi_api: client.ApiClient
) -> None:
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "absent"), api=capi_api)
    with pytest.raises(NotFound):
        await provider.describe()
    with pytest.raises(NotFound):
        await provider.scale(desired=1, token="t")


async def test_machines_failing_for_capacity_are_insufficient_capacity_issues(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=0)
    controller = CapiTestController(
        api=capi_api, namespace=capi_namespace, insufficient_capacity=True
    )
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    await provider.scale(desired=2, token="t1")
    await controller.reconcile("gpu")
    described = await provider.describe()
    assert described.insufficient_capacity
    assert [issue.code for issue in described.health_issues] == ["CreateError", "CreateError"]
    assert "InsufficientInstanceCapacity" in described.health_issues[0].message
    assert set(machine_names(capi_cluster, capi_namespace)) == {
        issue.resource_ids[0] for issue in described.health_issues
    }
    assert described.ready == 0 and described.status == "Failed"
    assert not isinstance(described, InsufficientCapacity)


async def test_machine_stuck_provisioning_past_the_timeout_is_an_issue(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=1)
    controller = CapiTestController(api=capi_api, namespace=capi_namespace, stuck_provisioning=True)
    await controller.reconcile("gpu")
    ref = MachineDeploymentRef(capi_namespace, "gpu")
    fresh = ClusterAPIProvider(ref=ref, api=capi_api, provisioning_timeout_s=600)
    assert (await fresh.describe()).health_issues == ()
    later = ClusterAPIProvider(
        ref=ref, api=capi_api, provisioning_timeout_s=600, clock=lambda: time.time() + 601
    )
    issues = (await later.describe()).health_issues
    assert [issue.code for issue in issues] == ["MachineProvisioningTimeout"]
    assert not issues[0].insufficient_capacity


async def test_machines_become_ready_only_after_the_provisioning_delay(
    capi_cluster: TestCluster, capi_namespace: str, capi_api: client.ApiClient
) -> None:
    create_deployment(capi_cluster, capi_namespace, name="gpu", cluster_name="fleet", replicas=2)
    now = [0.0]
    controller = CapiTestController(
        api=capi_api, namespace=capi_namespace, clock=lambda: now[0], provision_delay_s=120
    )
    provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=capi_api)
    await controller.reconcile("gpu")
    booting = await provider.describe()
    assert (booting.ready, booting.status, booting.updating) == (0, "ScalingUp", True)
    now[0] = 119
    await controller.reconcile("gpu")
    assert (await provider.describe()).ready == 0
    now[0] = 120
    await controller.reconcile("gpu")
    ready = await provider.describe()
    assert (ready.ready, ready.status, ready.updating) == (2, "Running", False)


async def test_unreachable_apiserver_is_provider_unavailable(capi_namespace: str) -> None:
    closed = KubeFaultProxy(
        upstream="https://127.0.0.1:9", ssl_context=ssl.create_default_context()
    )
    kubeconfig = closed.kubeconfig()  # the port is closed once the proxy has stopped
    closed.start()
    closed.stop()
    api = await api_client_from_kubeconfig(kubeconfig)
    try:
        provider = ClusterAPIProvider(ref=MachineDeploymentRef(capi_namespace, "gpu"), api=api)
        with pytest.raises(ProviderUnavailable) as unavailable:
            await provider.describe()
        assert unavailable.value.retryable
    finally:
        await api.close()
