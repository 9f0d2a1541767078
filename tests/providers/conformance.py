"""Shared conformance suite every capacity provider passes, plus helpers for provider tests.

The suite is parametrised over four cases: ``eks``, ``gke``, ``capi`` and ``karpenter``. Each
case is a fixture named ``<case>_provider_case`` returning a ``ProviderCase``; the GKE, Cluster
API and Karpenter cases live here, the EKS case in tests/providers/conftest.py (skipped with a
reason when that fixture is absent). test_registry.py collects the suite.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.auth.credentials import AnonymousCredentials
from kubernetes import client as sync_client
from kubernetes.client.rest import ApiException

from crossfade.providers.base import CapacityProvider, NodeGroupState
from crossfade.providers.capi import ClusterAPIProvider, MachineDeploymentRef
from crossfade.providers.errors import InsufficientCapacity, NotFound, Throttled
from crossfade.providers.gke import GKENodePoolProvider, GKENodePoolRef, make_client
from crossfade.providers.karpenter import KarpenterNodePoolProvider, KarpenterNodePoolRef
from crossfade.providers.kubeconfig import api_client_from_kubeconfig
from crossfade.testing import capi_controller, karpenter_controller
from crossfade.testing.controlplane import TestCluster, upstream_crds
from crossfade.testing.gke_server import GKEServer, GKEState, InjectedError
from crossfade.testing.kube_fault_proxy import KubeFaultProxy

__all__ = [
    "ProviderCase",
    "capi_conformance_cluster",
    "capi_provider_case",
    "documented_rbac",
    "gke_provider_case",
    "karpenter_conformance_cluster",
    "karpenter_provider_case",
    "provider_case",
    "service_account_kubeconfig",
    "test_conformance_describe_reports_sizes_within_bounds",
    "test_conformance_idempotent_repeat_makes_no_second_change",
    "test_conformance_insufficient_capacity_is_reported",
    "test_conformance_not_found",
    "test_conformance_scale_down",
    "test_conformance_scale_up",
    "test_conformance_throttling_is_a_retryable_throttled",
    "wait_until_served",
]

STORAGE_READY_TIMEOUT_S = 30.0
INITIAL_SIZE = 2
PROVIDER_CASES = ("eks", "gke", "capi", "karpenter")
Step = Callable[[], Awaitable[None]]


@dataclass
class ProviderCase:
    """What the suite needs from one provider type.

    ``provider`` targets an existing node group of ``initial`` nodes whose maximum allows at
    least ``initial + 2``; ``missing`` targets a node group that does not exist. ``settle``
    lets the cloud (or its test controller) apply what was asked; ``inject_insufficient_capacity``
    makes later scale-ups fail for lack of capacity; ``inject_throttling`` makes the next API
    call be refused for its rate.
    """

    provider: CapacityProvider
    missing: CapacityProvider
    initial: int
    settle: Step
    inject_insufficient_capacity: Step
    inject_throttling: Step


def wait_until_served(cluster: TestCluster, *, group: str, version: str, plural: str) -> None:
    """Wait until a freshly installed CRD's storage answers lists (it says 429 until then)."""
    deadline = time.monotonic() + STORAGE_READY_TIMEOUT_S
    with cluster.api_client() as api:
        custom = sync_client.CustomObjectsApi(api)
        while True:
            try:
                custom.list_cluster_custom_object(group, version, plural, limit=1)
                return
            except ApiException as error:
                if error.status != 429 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def documented_rbac(doc: Path) -> list[dict[str, Any]]:
    """Return the Role/ClusterRole objects of a doc's YAML blocks (so docs and tests agree)."""
    roles: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.DOTALL):
        for obj in yaml.safe_load_all(block):
            if isinstance(obj, dict) and obj.get("kind") in ("Role", "ClusterRole"):
                roles.append(obj)
    return roles


def service_account_kubeconfig(
    cluster: TestCluster, *, namespace: str, name: str
) -> dict[str, Any]:
    """Create a ServiceAccount and return a kubeconfig with a bound token for it."""
    with cluster.api_client() as api:
        core = sync_client.CoreV1Api(api)
        core.create_namespaced_service_account(
            namespace, sync_client.V1ServiceAccount(metadata=sync_client.V1ObjectMeta(name=name))
        )
        token = core.create_namespaced_service_account_token(
            name,
            namespace,
            sync_client.AuthenticationV1TokenRequest(
                spec=sync_client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        ).status.token
    ca_data = cluster.kubeconfig_dict()["clusters"][0]["cluster"]["certificate-authority-data"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": cluster.server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": name}}],
        "current-context": "c",
    }


# ---- the cases ------------------------------------------------------------------------------


class _ManualClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def gke_provider_case() -> Iterator[ProviderCase]:
    """GKE: the official client (REST) against the local GKE server, on a manual clock."""
    clock = _ManualClock()
    state = GKEState(clock=clock, operation_duration_s=30)
    ref = GKENodePoolRef("demo", "us-central1", "serving", "l4")
    state.add_pool(ref.name, zones=("us-central1-a",), node_count=INITIAL_SIZE)
    with GKEServer(state) as server:

        def provider(pool: GKENodePoolRef) -> GKENodePoolProvider:
            return GKENodePoolProvider(
                ref=pool,
                client=make_client(endpoint=server.endpoint, credentials=AnonymousCredentials()),
                max_nodes=6,
                operation_wait_s=60,
                sleep=clock.sleep,
                clock=clock,
            )

        async def settle() -> None:
            clock.now += 60

        async def ice() -> None:
            state.set_stockout(ref.name, zone="us-central1-a")

        async def throttle() -> None:
            state.fail_next(InjectedError(429, "Quota exceeded for quota metric 'Read requests'"))

        yield ProviderCase(
            provider=provider(ref),
            missing=provider(GKENodePoolRef("demo", "us-central1", "serving", "absent")),
            initial=INITIAL_SIZE,
            settle=settle,
            inject_insufficient_capacity=ice,
            inject_throttling=throttle,
        )


@pytest.fixture(scope="session")
def capi_conformance_cluster(cloud_clusters: dict[str, TestCluster]) -> TestCluster:
    cluster = cloud_clusters["gcp"]
    cluster.install_crds(upstream_crds("cluster-api"))
    for plural in ("machinedeployments", "machines"):
        wait_until_served(
            cluster, group=capi_controller.GROUP, version=capi_controller.VERSION, plural=plural
        )
    return cluster


@pytest.fixture(scope="session")
def karpenter_conformance_cluster(cloud_clusters: dict[str, TestCluster]) -> TestCluster:
    cluster = cloud_clusters["aws"]
    cluster.install_crds(upstream_crds("karpenter"))
    for plural in ("nodepools", "nodeclaims"):
        wait_until_served(
            cluster,
            group=karpenter_controller.GROUP,
            version=karpenter_controller.VERSION,
            plural=plural,
        )
    return cluster


@pytest.fixture
async def capi_provider_case(capi_conformance_cluster: TestCluster) -> AsyncIterator[ProviderCase]:
    """Cluster API: a MachineDeployment on a real apiserver, reached through a 429-able proxy."""
    cluster = capi_conformance_cluster
    namespace = f"conf-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as sync_api:
        sync_client.CoreV1Api(sync_api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=namespace))
        )
        sync_client.CustomObjectsApi(sync_api).create_namespaced_custom_object(
            capi_controller.GROUP,
            capi_controller.VERSION,
            namespace,
            "machinedeployments",
            capi_controller.machine_deployment(
                name="gpu", cluster_name="fleet", replicas=INITIAL_SIZE, max_size=6
            ),
        )
    proxy = KubeFaultProxy(upstream=cluster.server, ssl_context=cluster.ssl_context()).start()
    provider_api = await api_client_from_kubeconfig(proxy.kubeconfig())
    controller_api = await cluster.async_api_client()
    controller = capi_controller.CapiTestController(api=controller_api, namespace=namespace)
    await controller.reconcile("gpu")

    async def settle() -> None:
        await controller.reconcile("gpu")

    async def ice() -> None:
        controller.insufficient_capacity = True

    async def throttle() -> None:
        proxy.throttle_next()

    try:
        yield ProviderCase(
            provider=ClusterAPIProvider(
                ref=MachineDeploymentRef(namespace, "gpu"), api=provider_api
            ),
            missing=ClusterAPIProvider(
                ref=MachineDeploymentRef(namespace, "absent"), api=provider_api
            ),
            initial=INITIAL_SIZE,
            settle=settle,
            inject_insufficient_capacity=ice,
            inject_throttling=throttle,
        )
    finally:
        await provider_api.close()
        await controller_api.close()
        proxy.stop()


@pytest.fixture
async def karpenter_provider_case(
    karpenter_conformance_cluster: TestCluster,
) -> AsyncIterator[ProviderCase]:
    """Karpenter: a static NodePool on a real apiserver, reached through a 429-able proxy."""
    cluster = karpenter_conformance_cluster
    pool = f"conf-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as sync_api:
        sync_client.CustomObjectsApi(sync_api).create_cluster_custom_object(
            karpenter_controller.GROUP,
            karpenter_controller.VERSION,
            "nodepools",
            karpenter_controller.node_pool(name=pool, replicas=INITIAL_SIZE, limits={"nodes": "6"}),
        )
    proxy = KubeFaultProxy(upstream=cluster.server, ssl_context=cluster.ssl_context()).start()
    provider_api = await api_client_from_kubeconfig(proxy.kubeconfig())
    controller_api = await cluster.async_api_client()
    controller = karpenter_controller.KarpenterTestController(api=controller_api)
    await controller.reconcile(pool)

    async def settle() -> None:
        await controller.reconcile(pool)

    async def ice() -> None:
        controller.insufficient_capacity = True

    async def throttle() -> None:
        proxy.throttle_next()

    try:
        yield ProviderCase(
            provider=KarpenterNodePoolProvider(ref=KarpenterNodePoolRef(pool), api=provider_api),
            missing=KarpenterNodePoolProvider(
                ref=KarpenterNodePoolRef(f"{pool}-absent"), api=provider_api
            ),
            initial=INITIAL_SIZE,
            settle=settle,
            inject_insufficient_capacity=ice,
            inject_throttling=throttle,
        )
    finally:
        await provider_api.close()
        await controller_api.close()
        proxy.stop()


@pytest.fixture(params=PROVIDER_CASES)
def provider_case(request: pytest.FixtureRequest) -> ProviderCase:
    fixture_name = f"{request.param}_provider_case"
    try:
        case: ProviderCase = request.getfixturevalue(fixture_name)
    except pytest.FixtureLookupError:
        pytest.skip(
            f"no `{fixture_name}` fixture: the {request.param} provider has not joined the "
            "conformance suite yet (define it in tests/providers/conftest.py)"
        )
    return case


# ---- the suite ------------------------------------------------------------------------------


def _within_bounds(state: NodeGroupState) -> bool:
    return state.min_size <= state.desired <= state.max_size


async def test_conformance_describe_reports_sizes_within_bounds(
    provider_case: ProviderCase,
) -> None:
    state = await provider_case.provider.describe()
    assert state.desired == provider_case.initial
    assert _within_bounds(state)
    assert state.max_size >= provider_case.initial + 2
    assert state.status
    assert not state.insufficient_capacity
    assert state.ready is None or 0 <= state.ready <= state.max_size


async def test_conformance_scale_up(provider_case: ProviderCase) -> None:
    target = provider_case.initial + 2
    result = await provider_case.provider.scale(desired=target, token="conformance-up")
    assert result.changed
    assert result.desired == target
    assert result.previous in (None, provider_case.initial)
    await provider_case.settle()
    state = await provider_case.provider.describe()
    assert state.desired == target
    assert _within_bounds(state)


async def test_conformance_scale_down(provider_case: ProviderCase) -> None:
    target = provider_case.initial - 1
    result = await provider_case.provider.scale(desired=target, token="conformance-down")
    assert result.changed and result.desired == target
    await provider_case.settle()
    state = await provider_case.provider.describe()
    assert state.desired == target
    assert not state.updating or state.ready is None


async def test_conformance_idempotent_repeat_makes_no_second_change(
    provider_case: ProviderCase,
) -> None:
    target = provider_case.initial + 1
    first = await provider_case.provider.scale(desired=target, token="conformance-same")
    again = await provider_case.provider.scale(desired=target, token="conformance-same")
    await provider_case.settle()
    same_size = await provider_case.provider.scale(desired=target, token="conformance-other")
    assert first.changed
    assert not again.changed or again.update_id == first.update_id
    assert not same_size.changed
    assert same_size.writes == 0
    assert (await provider_case.provider.describe()).desired == target


async def test_conformance_not_found(provider_case: ProviderCase) -> None:
    with pytest.raises(NotFound) as on_describe:
        await provider_case.missing.describe()
    with pytest.raises(NotFound):
        await provider_case.missing.scale(desired=1, token="conformance-missing")
    assert not on_describe.value.retryable


async def test_conformance_insufficient_capacity_is_reported(provider_case: ProviderCase) -> None:
    await provider_case.inject_insufficient_capacity()
    target = provider_case.initial + 2
    try:
        await provider_case.provider.scale(desired=target, token="conformance-ice")
    except InsufficientCapacity as refused:
        assert not refused.retryable
    await provider_case.settle()
    state = await provider_case.provider.describe()
    assert state.insufficient_capacity
    assert any(issue.insufficient_capacity and issue.message for issue in state.health_issues)


async def test_conformance_throttling_is_a_retryable_throttled(
    provider_case: ProviderCase,
) -> None:
    await provider_case.inject_throttling()
    with pytest.raises(Throttled) as throttled:
        await provider_case.provider.describe()
    assert throttled.value.retryable
    assert (await provider_case.provider.describe()).desired == provider_case.initial
