"""Karpenter provider against a real apiserver with the upstream Karpenter CRDs installed."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.providers.errors import InvalidRequest, NotFound, ProviderUnavailable
from crossfade.providers.karpenter import (
    KarpenterNodePoolProvider,
    KarpenterNodePoolRef,
    is_claim_of,
    parse_quantity,
)
from crossfade.providers.kubeconfig import api_client_from_kubeconfig
from crossfade.providers.registry import ProviderContext, build_provider
from crossfade.testing.controlplane import TestCluster, upstream_crds
from crossfade.testing.karpenter_controller import (
    GROUP,
    VERSION,
    KarpenterTestController,
    node_pool,
)
from crossfade.testing.kube_fault_proxy import KubeFaultProxy
from tests.providers.conformance import wait_until_served

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def karpenter_cluster(cloud_clusters: dict[str, TestCluster]) -> TestCluster:
    cluster = cloud_clusters["aws"]
    cluster.install_crds(upstream_crds("karpenter"))
    for plural in ("nodepools", "nodeclaims"):
        wait_until_served(cluster, group=GROUP, version=VERSION, plural=plural)
    return cluster


@pytest.fixture
async def api(karpenter_cluster: TestCluster) -> AsyncIterator[client.ApiClient]:
    api_client = await karpenter_cluster.async_api_client()
    yield api_client
    await api_client.close()


@pytest.fixture
def pool_name() -> str:
    return f"gpu-{uuid.uuid4().hex[:8]}"


async def create_pool(api: client.ApiClient, **kwargs: Any) -> dict[str, Any]:
    created: dict[str, Any] = await client.CustomObjectsApi(api).create_cluster_custom_object(
        GROUP, VERSION, "nodepools", node_pool(**kwargs)
    )
    return created


async def get_pool(api: client.ApiClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await client.CustomObjectsApi(api).get_cluster_custom_object(
        GROUP, VERSION, "nodepools", name
    )
    return found


def test_quantities_parse_like_kubernetes() -> None:
    assert parse_quantity("16") == 16
    assert parse_quantity(24) == 24
    assert parse_quantity("1k") == 1000
    assert parse_quantity("2Ki") == 2048
    assert parse_quantity("1500m") == parse_quantity("1.5")
    with pytest.raises(InvalidRequest):
        parse_quantity("lots")


async def test_static_pool_scales_replicas_and_reads_readiness_from_claims(
    api: client.ApiClient, pool_name: str
) -> None:
    await create_pool(api, name=pool_name, replicas=1, limits={"nodes": "4"})
    controller = KarpenterTestController(api=api)
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool_name), api=api)
    await controller.reconcile(pool_name)
    before = await provider.describe()
    assert (before.desired, before.max_size, before.ready, before.status) == (1, 4, 1, "Ready")
    result = await provider.scale(desired=3, token="t1")
    assert (result.changed, result.previous, result.writes) == (True, 1, 1)
    assert (await get_pool(api, pool_name))["spec"]["replicas"] == 3
    during = await provider.describe()
    assert (during.desired, during.ready, during.updating) == (3, 1, True)
    await controller.reconcile(pool_name)
    after = await provider.describe()
    assert (after.ready, after.updating) == (3, False)
    with pytest.raises(InvalidRequest, match=r"outside 0\.\.4"):
        await provider.scale(desired=5, token="t2")


async def test_dynamic_pool_scales_through_the_accelerator_limit_only(
    api: client.ApiClient, pool_name: str
) -> None:
    await create_pool(api, name=pool_name, limits={"nvidia.com/gpu": "16", "cpu": "1k"})
    controller = KarpenterTestController(api=api, demand_nodes=5)
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool_name), api=api)
    assert (await provider.describe()).desired == 2
    await controller.reconcile(pool_name)
    assert (await provider.describe()).ready == 2  # the limit caps what demand may launch
    result = await provider.scale(desired=4, token="t1")
    assert result.changed
    limits = (await get_pool(api, pool_name))["spec"]["limits"]
    assert limits == {"nvidia.com/gpu": "32", "cpu": "1k"}
    await controller.reconcile(pool_name)
    assert (await provider.describe()).ready == 4


async def test_repeat_makes_no_write(api: client.ApiClient, pool_name: str) -> None:
    await create_pool(api, name=pool_name, replicas=2)
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool_name), api=api)
    before = (await get_pool(api, pool_name))["metadata"]["resourceVersion"]
    result = await provider.scale(desired=2, token="t1")
    assert not result.changed and result.writes == 0
    assert (await get_pool(api, pool_name))["metadata"]["resourceVersion"] == before


async def test_switching_a_static_pool_to_dynamic_is_refused_by_karpenters_own_rule(
    api: client.ApiClient, pool_name: str
) -> None:
    """The provider never removes replicas: the CRD's CEL rule would refuse it anyway."""
    await create_pool(api, name=pool_name, replicas=1)
    with pytest.raises(ApiException) as refused:
        await client.CustomObjectsApi(api).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "nodepools",
            pool_name,
            {"spec": {"replicas": None}},
            _content_type="application/merge-patch+json",
        )
    assert refused.value.status == 422


async def test_ice_events_of_deleted_claims_are_insufficient_capacity(
    api: client.ApiClient, pool_name: str
) -> None:
    await create_pool(api, name=pool_name, replicas=0)
    controller = KarpenterTestController(api=api, insufficient_capacity=True)
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool_name), api=api)
    await provider.scale(desired=2, token="t1")
    await controller.reconcile(pool_name)
    described = await provider.describe()
    assert described.insufficient_capacity
    assert [i.code for i in described.health_issues] == ["InsufficientCapacityError"] * 2
    assert described.ready == 0
    other = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(f"{pool_name}x"), api=api)
    await create_pool(api, name=f"{pool_name}x", replicas=0)
    assert (await other.describe()).health_issues == ()  # events of another pool's claims
    stale = KarpenterNodePoolProvider(
        ref=KarpenterNodePoolRef(pool_name), api=api, ice_event_window_s=-1.0
    )
    assert not (await stale.describe()).insufficient_capacity


async def test_launch_failure_condition_is_an_issue_but_not_ice(
    api: client.ApiClient, pool_name: str
) -> None:
    await create_pool(api, name=pool_name, replicas=1)
    controller = KarpenterTestController(api=api, launch_error=True)
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool_name), api=api)
    await controller.reconcile(pool_name)
    described = await provider.describe()
    assert [i.code for i in described.health_issues] == ["LaunchFailed"]
    assert not described.insufficient_capacity
    assert described.updating and described.ready == 0


async def test_missing_pool_is_not_found(api: client.ApiClient) -> None:
    provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef("absent-pool"), api=api)
    with pytest.raises(NotFound):
        await provider.describe()
    with pytest.raises(NotFound):
        await provider.scale(desired=1, token="t")


def test_claims_of_a_sibling_pool_with_a_longer_name_are_not_ours() -> None:
    assert is_claim_of("gpu-x7k2p", "gpu")
    assert not is_claim_of("gpu-a-x7k2p", "gpu")
    assert is_claim_of("gpu-a-x7k2p", "gpu-a")
    assert not is_claim_of("gpu-", "gpu")
    assert not is_claim_of("cpu-x7k2p", "gpu")


async def test_registry_built_provider_without_a_secret_uses_the_operators_own_cluster(
    api: client.ApiClient, pool_name: str
) -> None:
    await create_pool(api, name=pool_name, replicas=2)
    placement = {
        "name": "spot",
        "priority": 1,
        "provider": {"type": "KarpenterNodePool", "karpenterNodePool": {"nodePool": pool_name}},
        "nodes": {"min": 0, "max": 4},
    }
    provider = build_provider(placement, ProviderContext(kube_api_client=api))
    described = await provider.describe()
    assert (described.desired, described.max_size) == (2, 4)


async def test_unreachable_apiserver_is_provider_unavailable() -> None:
    closed = KubeFaultProxy(
        upstream="https://127.0.0.1:9", ssl_context=ssl.create_default_context()
    )
    kubeconfig = closed.kubeconfig()  # the port is closed once the proxy has stopped
    closed.start()
    closed.stop()
    api = await api_client_from_kubeconfig(kubeconfig)
    try:
        provider = KarpenterNodePoolProvider(ref=KarpenterNodePoolRef("gpu"), api=api)
        with pytest.raises(ProviderUnavailable):
            await provider.describe()
        with pytest.raises(ProviderUnavailable):
            await provider.scale(desired=1, token="t")
    finally:
        await api.close()
