"""The Karpenter provider built by the registry, as the least-privilege identity from the docs."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from kubernetes import client as sync_client

from crossfade.providers.errors import PermissionDenied
from crossfade.providers.registry import ProviderContext, build_provider
from crossfade.testing import karpenter_controller
from crossfade.testing.controlplane import REPO_ROOT, TestCluster
from tests.providers.conformance import (
    documented_rbac,
    karpenter_conformance_cluster,
    service_account_kubeconfig,
)

__all__ = ["karpenter_conformance_cluster"]

pytestmark = pytest.mark.cluster

KARPENTER_DOC = REPO_ROOT / "docs" / "providers" / "karpenter.md"


def placement(pool: str, secret: str) -> dict[str, Any]:
    return {
        "name": "spot",
        "priority": 1,
        "provider": {
            "type": "KarpenterNodePool",
            "karpenterNodePool": {"nodePool": pool, "kubeconfigSecretRef": {"name": secret}},
        },
        "accelerator": {"perNode": 8, "resourceName": "nvidia.com/gpu"},
        "nodes": {"min": 0, "max": 6},
    }


@pytest.fixture
def account(karpenter_conformance_cluster: TestCluster) -> tuple[str, str]:
    """A fresh namespace and ServiceAccount name in the Karpenter cluster."""
    namespace = f"cf-{uuid.uuid4().hex[:8]}"
    with karpenter_conformance_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=namespace))
        )
    return namespace, "crossfade"


def account_kubeconfig(cluster: TestCluster, account: tuple[str, str]) -> dict[str, Any]:
    """Return a kubeconfig for the ServiceAccount ``account`` (namespace, name)."""
    sa_namespace, sa_name = account
    return service_account_kubeconfig(cluster, namespace=sa_namespace, name=sa_name)


def grant_documented_roles(cluster: TestCluster, *, namespace: str, account: str) -> None:
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    objects: list[dict[str, Any]] = []
    for role in documented_rbac(KARPENTER_DOC):
        role["metadata"]["name"] = f"{role['metadata']['name']}-{namespace}"
        binding_kind = "ClusterRoleBinding" if role["kind"] == "ClusterRole" else "RoleBinding"
        binding: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": binding_kind,
            "metadata": {"name": role["metadata"]["name"]},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": role["kind"],
                "name": role["metadata"]["name"],
            },
            "subjects": [subject],
        }
        if "namespace" in role["metadata"]:
            binding["metadata"]["namespace"] = role["metadata"]["namespace"]
        objects += [role, binding]
    cluster.apply_manifest(objects)


@contextlib.asynccontextmanager
async def provider_as(
    account_kubeconfig: dict[str, Any],
    *,
    management_cluster: TestCluster,
    namespace: str,
    pool: str,
) -> AsyncIterator[Any]:
    raw = yaml.safe_dump(account_kubeconfig).encode()
    with management_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            sync_client.V1Secret(
                metadata=sync_client.V1ObjectMeta(name="karpenter-kubeconfig"),
                data={"value": base64.b64encode(raw).decode()},
            ),
        )
    management = await management_cluster.async_api_client()
    context = ProviderContext(kube_api_client=management).for_namespace(namespace)
    provider: Any = build_provider(placement(pool, "karpenter-kubeconfig"), context)
    try:
        yield provider
    finally:
        await provider.aclose()
        await management.close()
        with management_cluster.api_client() as api:
            sync_client.CoreV1Api(api).delete_namespaced_secret("karpenter-kubeconfig", namespace)


def create_pool(cluster: TestCluster, **kwargs: Any) -> str:
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        sync_client.CustomObjectsApi(api).create_cluster_custom_object(
            karpenter_controller.GROUP,
            karpenter_controller.VERSION,
            "nodepools",
            karpenter_controller.node_pool(name=name, **kwargs),
        )
    return name


async def test_documented_roles_are_enough_for_static_and_dynamic_pools(
    karpenter_conformance_cluster: TestCluster,
    management_cluster: TestCluster,
    namespace: str,
    account: tuple[str, str],
) -> None:
    kubeconfig = account_kubeconfig(karpenter_conformance_cluster, account)
    sa_namespace, sa_name = account
    grant_documented_roles(karpenter_conformance_cluster, namespace=sa_namespace, account=sa_name)
    static = create_pool(karpenter_conformance_cluster, replicas=1)
    dynamic = create_pool(karpenter_conformance_cluster, limits={"nvidia.com/gpu": "8"})
    for pool, before, after in ((static, 1, 3), (dynamic, 1, 2)):
        async with provider_as(
            kubeconfig, management_cluster=management_cluster, namespace=namespace, pool=pool
        ) as provider:
            assert (await provider.describe()).desired == before
            assert (await provider.scale(desired=after, token="t")).changed
            assert (await provider.describe()).desired == after


async def test_identity_without_the_roles_is_permission_denied(
    karpenter_conformance_cluster: TestCluster,
    management_cluster: TestCluster,
    namespace: str,
    account: tuple[str, str],
) -> None:
    kubeconfig = account_kubeconfig(karpenter_conformance_cluster, account)
    pool = create_pool(karpenter_conformance_cluster, replicas=1)
    async with provider_as(
        kubeconfig, management_cluster=management_cluster, namespace=namespace, pool=pool
    ) as provider:
        with pytest.raises(PermissionDenied):
            await provider.describe()
        with pytest.raises(PermissionDenied):
            await provider.scale(desired=2, token="t")
