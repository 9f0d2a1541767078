"""The Cluster API provider built by the registry, as a least-privilege identity from the docs.

End to end: placement (wire form) -> registry -> kubeconfig Secret in the pool's namespace ->
ServiceAccount token bound to the Role printed in docs/providers/capi.md -> describe and scale.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as sync_client

from crossfade.providers import capi_provisioner
from crossfade.providers.errors import InvalidRequest, NotFound, PermissionDenied
from crossfade.providers.provisioning import DeletionPolicyTag, template_from_placement
from crossfade.providers.registry import ProviderContext, build_provider
from crossfade.testing import capi_controller
from crossfade.testing.controlplane import REPO_ROOT, TestCluster
from tests.providers import capi_provisioning_support
from tests.providers.capi_provisioning_support import capi_templates_cluster
from tests.providers.conformance import (
    capi_conformance_cluster,
    documented_rbac,
    service_account_kubeconfig,
)

__all__ = ["capi_conformance_cluster", "capi_templates_cluster"]

pytestmark = pytest.mark.cluster

CAPI_DOC = REPO_ROOT / "docs" / "providers" / "capi.md"


def placement(secret: str, *, namespace: str, key: str = "value") -> dict[str, Any]:
    return {
        "name": "onprem",
        "priority": 1,
        "provider": {
            "type": "ClusterAPI",
            "clusterAPI": {
                "kubeconfigSecretRef": {"name": secret, "key": key},
                "namespace": namespace,
                "machineDeployment": "gpu",
            },
        },
        "nodes": {"min": 0, "max": 6},
    }


def store_secret(cluster: TestCluster, namespace: str, name: str, data: dict[str, bytes]) -> None:
    with cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            sync_client.V1Secret(
                metadata=sync_client.V1ObjectMeta(name=name),
                data={k: base64.b64encode(v).decode() for k, v in data.items()},
            ),
        )


@pytest.fixture
def fleet(capi_conformance_cluster: TestCluster) -> str:
    """A namespace with a MachineDeployment `gpu` of 1 replica in the Cluster API cluster."""
    namespace = f"fleet-{uuid.uuid4().hex[:8]}"
    with capi_conformance_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=namespace))
        )
        sync_client.CustomObjectsApi(api).create_namespaced_custom_object(
            capi_controller.GROUP,
            capi_controller.VERSION,
            namespace,
            "machinedeployments",
            capi_controller.machine_deployment(name="gpu", cluster_name="fleet", replicas=1),
        )
    return namespace


@pytest.fixture
async def context(
    management_cluster: TestCluster, namespace: str
) -> AsyncIterator[ProviderContext]:
    management = await management_cluster.async_api_client()
    yield ProviderContext(kube_api_client=management).for_namespace(namespace)
    await management.close()


@pytest.fixture
async def built() -> AsyncIterator[list[Any]]:
    """Providers a test built; their kubeconfig-Secret clients are closed afterwards."""
    providers: list[Any] = []
    yield providers
    for provider in providers:
        await provider.aclose()


def build(built: list[Any], wire: dict[str, Any], context: ProviderContext) -> Any:
    provider = build_provider(wire, context)
    built.append(provider)
    return provider


SCALE_ROLE = "crossfade-capacity"
PROVISIONING_ROLE = "crossfade-provisioning"
FLEET_SECRET = "fleet-kubeconfig"


def documented_roles() -> dict[str, dict[str, Any]]:
    roles = documented_rbac(CAPI_DOC)
    assert [role["kind"] for role in roles] == ["Role", "Role"]
    return {role["metadata"]["name"]: role for role in roles}


def grant_documented_role(
    cluster: TestCluster, *, namespace: str, account: str, name: str = SCALE_ROLE
) -> None:
    role = documented_roles()[name]
    role["metadata"]["namespace"] = namespace
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{name}-{account}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    cluster.apply_manifest([role, binding])


@pytest.fixture
def fleet_identity(
    management_cluster: TestCluster, namespace: str, fleet: str
) -> Callable[..., str]:
    """Return ``store(cluster, account=, roles=)``: bind ServiceAccount ``account`` of the fleet
    namespace to the documented ``roles``, store its kubeconfig in the pool's namespace as
    Secret FLEET_SECRET, and return the Secret's name."""

    def store(
        cluster: TestCluster, *, account: str = "cf", roles: tuple[str, ...] = (SCALE_ROLE,)
    ) -> str:
        kubeconfig = service_account_kubeconfig(cluster, namespace=fleet, name=account)
        for role in roles:
            grant_documented_role(cluster, namespace=fleet, account=account, name=role)
        store_secret(
            management_cluster,
            namespace,
            FLEET_SECRET,
            {"value": yaml.safe_dump(kubeconfig).encode()},
        )
        return FLEET_SECRET

    return store


def may(cluster: TestCluster, *, namespace: str, account: str, verb: str) -> bool:
    """Ask the apiserver's authorizer whether the account may ``verb`` MachineDeployments."""
    review = sync_client.V1SubjectAccessReview(
        spec=sync_client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{account}",
            resource_attributes=sync_client.V1ResourceAttributes(
                group=capi_controller.GROUP,
                resource="machinedeployments",
                verb=verb,
                namespace=namespace,
            ),
        )
    )
    with cluster.api_client() as api:
        answer = sync_client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def templated_placement(secret: str, *, namespace: str) -> dict[str, Any]:
    wire = placement(secret, namespace=namespace)
    wire["provider"]["clusterAPI"] = capi_provisioning_support.member(namespace)
    wire["provider"]["clusterAPI"]["kubeconfigSecretRef"] = {"name": secret, "key": "value"}
    wire["template"] = {"instanceTypes": ["p5.48xlarge", "p4d.24xlarge"]}
    wire["lifecycle"] = "OnDemand"
    return wire


async def test_documented_role_is_enough_to_describe_and_scale(
    capi_conformance_cluster: TestCluster,
    fleet: str,
    fleet_identity: Callable[..., str],
    context: ProviderContext,
    built: list[Any],
) -> None:
    secret = fleet_identity(capi_conformance_cluster)
    provider = build(built, placement(secret, namespace=fleet), context)
    assert (await provider.describe()).desired == 1
    result = await provider.scale(desired=3, token="t1")
    assert result.changed
    assert (await provider.describe()).desired == 3


async def test_identity_without_the_role_is_permission_denied(
    capi_conformance_cluster: TestCluster,
    fleet: str,
    fleet_identity: Callable[..., str],
    context: ProviderContext,
    built: list[Any],
) -> None:
    secret = fleet_identity(capi_conformance_cluster, account="nobody", roles=())
    provider = build(built, placement(secret, namespace=fleet), context)
    with pytest.raises(PermissionDenied) as denied:
        await provider.describe()
    assert denied.value.code == "Forbidden"


async def test_missing_secret_is_not_found(
    fleet: str, context: ProviderContext, built: list[Any]
) -> None:
    provider = build(built, placement("no-such-secret", namespace=fleet), context)
    with pytest.raises(NotFound, match="no-such-secret"):
        await provider.describe()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"other": b"x"}, "is missing"),
        ({"value": b"token: s3cr3t-value\n  - : ["}, "not valid YAML"),
        ({"value": b"token: s3cr3t-value\n"}, "not a kubeconfig"),
    ],
)
async def test_broken_secret_is_an_invalid_request_that_never_shows_its_content(
    management_cluster: TestCluster,
    namespace: str,
    fleet: str,
    context: ProviderContext,
    data: dict[str, bytes],
    problem: str,
    built: list[Any],
) -> None:
    store_secret(management_cluster, namespace, "broken", data)
    provider = build(built, placement("broken", namespace=fleet), context)
    with pytest.raises(InvalidRequest, match=problem) as invalid:
        await provider.describe()
    assert "s3cr3t" not in str(invalid.value)
    assert f"Secret {namespace}/broken key 'value'" in str(invalid.value)


async def test_documented_roles_are_enough_to_create_adopt_list_and_delete(
    capi_templates_cluster: TestCluster,
    fleet: str,
    fleet_identity: Callable[..., str],
    context: ProviderContext,
    built: list[Any],
) -> None:
    cluster = capi_templates_cluster  # the Cluster API cluster, template CRDs installed
    capi_provisioning_support.create_templates(
        cluster,
        fleet,
        infrastructure=(capi_provisioning_support.P5, capi_provisioning_support.P4D),
    )
    secret = fleet_identity(cluster, roles=(SCALE_ROLE, PROVISIONING_ROLE))
    wire = templated_placement(secret, namespace=fleet)
    provisioner = capi_provisioner.build(wire, context)
    built.append(provisioner)
    owner = capi_provisioning_support.new_owner()
    template = template_from_placement(wire)
    policy = DeletionPolicyTag.DELETE
    created = await provisioner.ensure(owner=owner, template=template, deletion_policy=policy)
    adopted = await provisioner.ensure(owner=owner, template=template, deletion_policy=policy)
    assert created.created and adopted.adopted and adopted.name == created.name
    assert [group.name for group in await provisioner.list_owned()] == [created.name]
    scaled = build(built, {**placement(secret, namespace=fleet)}, context)
    assert (await scaled.describe()).desired == 1  # the team's `gpu`, next to ours
    assert await provisioner.delete_owned(name=created.name, owner=owner)
    assert await provisioner.list_owned() == []


async def test_scale_only_role_cannot_create(
    capi_conformance_cluster: TestCluster,
    fleet: str,
    fleet_identity: Callable[..., str],
    context: ProviderContext,
    built: list[Any],
) -> None:
    secret = fleet_identity(capi_conformance_cluster)
    for verb in ("create", "delete", "list"):
        assert not may(capi_conformance_cluster, namespace=fleet, account="cf", verb=verb)
    assert may(capi_conformance_cluster, namespace=fleet, account="cf", verb="get")
    wire = templated_placement(secret, namespace=fleet)
    provisioner = capi_provisioner.build(wire, context)
    built.append(provisioner)
    with pytest.raises(PermissionDenied) as denied:
        await provisioner.ensure(
            owner=capi_provisioning_support.new_owner(),
            template=template_from_placement(wire),
            deletion_policy=DeletionPolicyTag.RETAIN,
        )
    assert denied.value.code == "Forbidden"
    stored = capi_provisioning_support.machine_deployments(capi_conformance_cluster, fleet)
    assert list(stored) == ["gpu"]


def test_docs_name_the_roles_the_tests_apply() -> None:
    assert Path(CAPI_DOC).is_file()
    verbs = {
        (name, resource): set(rule["verbs"])
        for name, role in documented_roles().items()
        for rule in role["rules"]
        for resource in rule["resources"]
    }
    assert verbs == {
        (SCALE_ROLE, "machinedeployments"): {"get"},
        (SCALE_ROLE, "machinedeployments/scale"): {"patch"},
        (SCALE_ROLE, "machines"): {"list"},
        (PROVISIONING_ROLE, "machinedeployments"): {"list", "create", "delete"},
        (PROVISIONING_ROLE, "kubeadmconfigtemplates"): {"get"},
        (PROVISIONING_ROLE, "awsmachinetemplates"): {"get"},
        (PROVISIONING_ROLE, "gcpmachinetemplates"): {"get"},
        (PROVISIONING_ROLE, "azuremachinetemplates"): {"get"},
        (PROVISIONING_ROLE, "dockermachinetemplates"): {"get"},
    }
