"""Shared helpers of the Cluster API provisioning and reaper tests: blueprint, namespace, counts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes import client as sync_client
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from crossfade.providers.capi_provisioner import ClusterApiProvisioner, MachineDeploymentBlueprint
from crossfade.providers.capi_templates import TemplateRef
from crossfade.providers.provisioning import NodeGroupTemplate, Owner, Taint
from crossfade.testing import capi_controller
from crossfade.testing.controlplane import TestCluster, upstream_crds
from tests.providers.conformance import wait_until_served

INFRASTRUCTURE_GROUP = "infrastructure.cluster.x-k8s.io"
INFRASTRUCTURE_KIND = "DockerMachineTemplate"  # CAPD's: the upstream CRD the tests can install
BOOTSTRAP_GROUP = "bootstrap.cluster.x-k8s.io"
BOOTSTRAP_TEMPLATE = "gpu-workers"
P5, P4D = "gpu-p5", "gpu-p4d"
TEMPLATE_VERSION = "v1beta2"
TEMPLATE = NodeGroupTemplate(
    instance_types=("p5.48xlarge", "p4d.24xlarge"),
    subnets=(),
    node_role="",
    min_size=1,
    max_size=4,
    labels={"crossfade.dev/workload": "inference", "node-role.kubernetes.io/inference": ""},
    taints=(Taint(key="nvidia.com/gpu", value="present"), Taint(key="crossfade.dev/standby")),
)


def member(namespace: str) -> dict[str, Any]:
    """The ``provider.clusterAPI`` member (wire form) of a templated placement."""
    return {
        "kubeconfigSecretRef": {"name": "fleet-kubeconfig", "key": "value"},
        "namespace": namespace,
        "machineDeployment": "gpu",
        "clusterName": "fleet",
        "version": "v1.33.1",
        "bootstrapConfigRef": {
            "apiGroup": BOOTSTRAP_GROUP,
            "kind": "KubeadmConfigTemplate",
            "name": BOOTSTRAP_TEMPLATE,
        },
        "infrastructureTemplates": [
            {"apiGroup": INFRASTRUCTURE_GROUP, "kind": INFRASTRUCTURE_KIND, "name": P5},
            {"apiGroup": INFRASTRUCTURE_GROUP, "kind": INFRASTRUCTURE_KIND, "name": P4D},
        ],
    }


def blueprint(namespace: str) -> MachineDeploymentBlueprint:
    return MachineDeploymentBlueprint.from_member(member(namespace), placement="capi-standby")


def new_owner(placement: str = "capi-standby") -> Owner:
    return Owner(namespace="serving", pool="llama", placement=placement, pool_uid=str(uuid.uuid4()))


def infrastructure_ref(name: str) -> TemplateRef:
    return TemplateRef(api_group=INFRASTRUCTURE_GROUP, kind=INFRASTRUCTURE_KIND, name=name)


def new_namespace(cluster: TestCluster) -> str:
    name = f"capi-prov-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=name))
        )
    return name


def install_template_crds(cluster: TestCluster) -> None:
    """Install the upstream KubeadmConfigTemplate and DockerMachineTemplate CRDs."""
    cluster.install_crds(upstream_crds("cluster-api-templates"))
    wait_until_served(
        cluster, group=BOOTSTRAP_GROUP, version=TEMPLATE_VERSION, plural="kubeadmconfigtemplates"
    )
    wait_until_served(
        cluster,
        group=INFRASTRUCTURE_GROUP,
        version=TEMPLATE_VERSION,
        plural="dockermachinetemplates",
    )


def create_templates(
    cluster: TestCluster, namespace: str, *, infrastructure: tuple[str, ...]
) -> None:
    """Create the bootstrap template and the named infrastructure templates in ``namespace``."""
    kubeadm = {"format": "cloud-config"}  # the CRD wants at least one field here
    objects: list[tuple[str, str, str, str, dict[str, Any]]] = [
        (
            BOOTSTRAP_GROUP,
            "kubeadmconfigtemplates",
            "KubeadmConfigTemplate",
            BOOTSTRAP_TEMPLATE,
            kubeadm,
        )
    ]
    objects += [
        (INFRASTRUCTURE_GROUP, "dockermachinetemplates", INFRASTRUCTURE_KIND, name, {})
        for name in infrastructure
    ]
    with cluster.api_client() as api:
        custom = sync_client.CustomObjectsApi(api)
        for group, plural, kind, name, spec in objects:
            custom.create_namespaced_custom_object(
                group,
                TEMPLATE_VERSION,
                namespace,
                plural,
                {
                    "apiVersion": f"{group}/{TEMPLATE_VERSION}",
                    "kind": kind,
                    "metadata": {"name": name},
                    "spec": {"template": {"spec": spec}},
                },
            )


def machine_deployments(cluster: TestCluster, namespace: str) -> dict[str, dict[str, Any]]:
    """MachineDeployments in ``namespace`` by name, as the apiserver stores them."""
    with cluster.api_client() as api:
        listed: dict[str, Any] = sync_client.CustomObjectsApi(api).list_namespaced_custom_object(
            capi_controller.GROUP, capi_controller.VERSION, namespace, "machinedeployments"
        )
    return {item["metadata"]["name"]: item for item in listed["items"]}


def machines(cluster: TestCluster, namespace: str) -> list[dict[str, Any]]:
    with cluster.api_client() as api:
        listed: dict[str, Any] = sync_client.CustomObjectsApi(api).list_namespaced_custom_object(
            capi_controller.GROUP, capi_controller.VERSION, namespace, "machines"
        )
    items: list[dict[str, Any]] = listed["items"]
    return items


def create_unlabelled(cluster: TestCluster, namespace: str, name: str) -> None:
    """A team's own MachineDeployment that happens to have a name crossfade would use."""
    with cluster.api_client() as api:
        sync_client.CustomObjectsApi(api).create_namespaced_custom_object(
            capi_controller.GROUP,
            capi_controller.VERSION,
            namespace,
            "machinedeployments",
            capi_controller.machine_deployment(name=name, cluster_name="fleet", replicas=1),
        )


def hold_finalizer(cluster: TestCluster, namespace: str, name: str) -> None:
    """Give a MachineDeployment a finalizer, as Cluster API's controller does."""
    with cluster.api_client() as api:
        sync_client.CustomObjectsApi(api).patch_namespaced_custom_object(
            capi_controller.GROUP,
            capi_controller.VERSION,
            namespace,
            "machinedeployments",
            name,
            {"metadata": {"finalizers": ["cluster.x-k8s.io/machinedeployment"]}},
        )


def machine_deployment_creates(cluster: TestCluster) -> float:
    """MachineDeployment POSTs the apiserver has served (any code), from its own /metrics."""
    with cluster.api_client() as api:
        # The client's own connection pool carries the admin client certificate.
        response = api.rest_client.pool_manager.request("GET", f"{api.configuration.host}/metrics")
        text = response.data.decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "apiserver_request_total"
                and labels.get("verb") == "POST"
                and labels.get("group") == capi_controller.GROUP
                and labels.get("resource") == "machinedeployments"
            ):
                total += sample.value
    return total


ProvisionerFactory = Callable[[], Awaitable[ClusterApiProvisioner]]


@pytest.fixture(autouse=True)
def provisioner_info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Emit the provisioner's INFO records, so a log call that cannot format fails the test."""
    caplog.set_level(logging.INFO, logger="crossfade.providers")


@pytest.fixture(scope="session")
def capi_templates_cluster(capi_conformance_cluster: TestCluster) -> TestCluster:
    """The Cluster API test cluster with the template CRDs installed too."""
    install_template_crds(capi_conformance_cluster)
    return capi_conformance_cluster


@pytest.fixture
def capi_prov_namespace(capi_templates_cluster: TestCluster) -> str:
    """A namespace holding the bootstrap template and both infrastructure templates."""
    namespace = new_namespace(capi_templates_cluster)
    create_templates(capi_templates_cluster, namespace, infrastructure=(P5, P4D))
    return namespace


@pytest.fixture
async def controller(
    capi_conformance_cluster: TestCluster, capi_prov_namespace: str
) -> AsyncIterator[capi_controller.CapiTestController]:
    api = await capi_conformance_cluster.async_api_client()
    yield capi_controller.CapiTestController(api=api, namespace=capi_prov_namespace)
    await api.close()


@pytest.fixture
async def new_provisioner(
    capi_conformance_cluster: TestCluster, capi_prov_namespace: str
) -> AsyncIterator[ProvisionerFactory]:
    """Make provisioners, each with its own client (a fresh operator process each time)."""
    clients: list[client.ApiClient] = []

    async def make() -> ClusterApiProvisioner:
        api = await capi_conformance_cluster.async_api_client()
        clients.append(api)
        return ClusterApiProvisioner(blueprint=blueprint(capi_prov_namespace), api=api)

    yield make
    for api in clients:
        await api.close()
