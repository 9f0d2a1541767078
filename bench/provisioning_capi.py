"""Cluster API provisioning: apiserver requests and time per path (create, adopt, ICE fallback).

Starts one real etcd + kube-apiserver with the upstream Cluster API CRDs. Each run is a fresh
namespace and pool: ``ClusterApiProvisioner.ensure`` creates the MachineDeployment (timed),
the test controller makes its Machines, a second provisioner (a restarted operator) adopts
it, ``ClusterAPIProvider.scale`` takes it to the failover size; then a placement whose first
infrastructure template is out of capacity walks to the second. Requests are counted by the
apiserver itself (``apiserver_request_total`` for the Cluster API groups; discovery requests,
two per template group and provisioner, carry no group there and are not counted).
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kubernetes import client as sync_client
from prometheus_client.parser import text_string_to_metric_families

from bench.common import spread, write_results
from crossfade.providers.capi import ClusterAPIProvider, MachineDeploymentRef
from crossfade.providers.capi_provisioner import ClusterApiProvisioner, MachineDeploymentBlueprint
from crossfade.providers.provisioning import DeletionPolicyTag, NodeGroupTemplate, Owner
from crossfade.testing import capi_controller
from crossfade.testing.controlplane import ControlPlane, TestCluster, upstream_crds

RUNS = 20
FAILOVER_NODES = 2
STORAGE_READY_TIMEOUT_S = 30.0
INFRA = "infrastructure.cluster.x-k8s.io"
TEMPLATE = NodeGroupTemplate(
    instance_types=("p5.48xlarge", "p4d.24xlarge"),
    subnets=(),
    node_role="",
    min_size=0,
    max_size=4,
)
MEMBER: dict[str, Any] = {
    "clusterName": "fleet",
    "version": "v1.33.1",
    "bootstrapConfigRef": {
        "apiGroup": "bootstrap.cluster.x-k8s.io",
        "kind": "KubeadmConfigTemplate",
        "name": "gpu-workers",
    },
    "infrastructureTemplates": [
        {"apiGroup": INFRA, "kind": "DockerMachineTemplate", "name": "gpu-p5"},
        {"apiGroup": INFRA, "kind": "DockerMachineTemplate", "name": "gpu-p4d"},
    ],
}
GROUPS = frozenset({capi_controller.GROUP, "bootstrap.cluster.x-k8s.io", INFRA})
Calls = Counter[str]


def requests_by_call(cluster: TestCluster) -> Calls:
    """Cluster API requests (core, bootstrap, infrastructure) served so far: ``VERB resource``."""
    with cluster.api_client() as api:
        text = api.rest_client.pool_manager.request(
            "GET", f"{api.configuration.host}/metrics"
        ).data.decode()
    counted: Calls = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and labels.get("group") in GROUPS:
                key = f"{labels['verb']} {labels['resource']}"
                if labels.get("subresource"):
                    key += f"/{labels['subresource']}"
                counted[key] += int(sample.value)
    return counted


def setup(cluster: TestCluster) -> None:
    cluster.install_crds(upstream_crds("cluster-api") + upstream_crds("cluster-api-templates"))
    deadline = time.monotonic() + STORAGE_READY_TIMEOUT_S
    served = [
        (capi_controller.GROUP, "machinedeployments"),
        (capi_controller.GROUP, "machines"),
        ("bootstrap.cluster.x-k8s.io", "kubeadmconfigtemplates"),
        (INFRA, "dockermachinetemplates"),
    ]
    with cluster.api_client() as api:
        custom = sync_client.CustomObjectsApi(api)
        for group, plural in served:
            while True:
                try:
                    custom.list_cluster_custom_object(group, "v1beta2", plural, limit=1)
                    break
                except sync_client.ApiException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


def new_namespace(cluster: TestCluster) -> str:
    """A namespace with the bootstrap template and both infrastructure templates."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    templates = [
        (
            "bootstrap.cluster.x-k8s.io",
            "kubeadmconfigtemplates",
            "KubeadmConfigTemplate",
            "gpu-workers",
        ),
        (INFRA, "dockermachinetemplates", "DockerMachineTemplate", "gpu-p5"),
        (INFRA, "dockermachinetemplates", "DockerMachineTemplate", "gpu-p4d"),
    ]
    with cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespace(
            sync_client.V1Namespace(metadata=sync_client.V1ObjectMeta(name=name))
        )
        custom = sync_client.CustomObjectsApi(api)
        for group, plural, kind, template in templates:
            spec = {"format": "cloud-config"} if kind == "KubeadmConfigTemplate" else {}
            custom.create_namespaced_custom_object(
                group,
                "v1beta2",
                name,
                plural,
                {
                    "apiVersion": f"{group}/v1beta2",
                    "kind": kind,
                    "metadata": {"name": template},
                    "spec": {"template": {"spec": spec}},
                },
            )
    return name


def delta(after: Calls, before: Calls) -> Calls:
    return Counter({k: after[k] - before[k] for k in after if after[k] - before[k]})


async def one_run(cluster: TestCluster) -> dict[str, Any]:
    namespace = new_namespace(cluster)
    blueprint = MachineDeploymentBlueprint.from_member(
        {**MEMBER, "namespace": namespace}, placement="capi-standby"
    )
    owner = Owner("serving", "llama", "capi-standby", str(uuid.uuid4()))
    policy = DeletionPolicyTag.DELETE
    api = await cluster.async_api_client()
    restarted = await cluster.async_api_client()
    controller = capi_controller.CapiTestController(api=api, namespace=namespace)
    try:
        provisioner = ClusterApiProvisioner(blueprint=blueprint, api=api)
        before = requests_by_call(cluster)
        started = time.perf_counter()
        created = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=policy)
        ensure_ms = (time.perf_counter() - started) * 1000
        create_calls = delta(requests_by_call(cluster), before)
        await controller.reconcile_all()

        before = requests_by_call(cluster)
        started = time.perf_counter()
        adopted = await ClusterApiProvisioner(blueprint=blueprint, api=restarted).ensure(
            owner=owner, template=TEMPLATE, deletion_policy=policy
        )
        adopt_ms = (time.perf_counter() - started) * 1000
        provider = ClusterAPIProvider(ref=MachineDeploymentRef(namespace, adopted.name), api=api)
        await provider.scale(desired=FAILOVER_NODES, token="bench")
        adopt_calls = delta(requests_by_call(cluster), before)
        assert created.created and adopted.adopted and adopted.name == created.name

        # ICE on the first infrastructure template: create, Machines fail, fall back.
        ice_owner = Owner("serving", "llama", "capi-ice", str(uuid.uuid4()))
        controller.insufficient_capacity_templates = {"gpu-p5"}
        ice_template = NodeGroupTemplate(
            instance_types=TEMPLATE.instance_types,
            subnets=(),
            node_role="",
            min_size=1,
            max_size=4,
        )
        await provisioner.ensure(owner=ice_owner, template=ice_template, deletion_policy=policy)
        await controller.reconcile_all()
        before = requests_by_call(cluster)
        started = time.perf_counter()
        fallback = await provisioner.ensure(
            owner=ice_owner, template=ice_template, deletion_policy=policy
        )
        fallback_ms = (time.perf_counter() - started) * 1000
        fallback_calls = delta(requests_by_call(cluster), before)
        assert fallback.skipped_types == ("p5.48xlarge",) and fallback.created
    finally:
        await api.close()
        await restarted.close()
    return {
        "ensure_create_ms": ensure_ms,
        "ensure_adopt_ms": adopt_ms,
        "ensure_fallback_ms": fallback_ms,
        "create_calls": create_calls,
        "adopt_and_scale_calls": adopt_calls,
        "fallback_calls": fallback_calls,
    }


async def measure(cluster: TestCluster) -> list[dict[str, Any]]:
    return [await one_run(cluster) for _ in range(RUNS)]


def main() -> int:
    plane = ControlPlane.create()
    try:
        cluster = plane.start_cluster("bench-capi-provisioning")
        setup(cluster)
        runs = asyncio.run(measure(cluster))
    finally:
        plane.stop()
    rows = []
    for path, calls_key, ms_key in (
        ("create (no MachineDeployment yet)", "create_calls", "ensure_create_ms"),
        ("restart: adopt + scale to 2", "adopt_and_scale_calls", "ensure_adopt_ms"),
        ("ICE on template 1: delete it, create template 2", "fallback_calls", "ensure_fallback_ms"),
    ):
        stats = spread([run[ms_key] for run in runs])
        calls: Calls = runs[-1][calls_key]  # every run makes the same calls; keep the last
        rows.append(
            {
                "path": path,
                "ensure p50 (ms)": round(stats["median"], 1),
                "ensure p99 (ms)": round(stats["p99"], 1),
                "apiserver requests": sum(calls.values()),
                "requests": ", ".join(f"{k} x{n}" for k, n in sorted(calls.items())),
            }
        )
    notes = (
        f"{RUNS} runs, one real kube-apiserver + etcd on loopback, upstream Cluster API v1.14.2 "
        "CRDs, `testing/capi_controller.py` as the controllers. Requests are the apiserver's own "
        "`apiserver_request_total` for the core, bootstrap and infrastructure groups of Cluster "
        "API (the adopt row includes the `/scale` PATCH of the failover; the ensure time does "
        "not). Discovery (`/apis/<group>` and `/apis/<group>/<version>` for each template "
        "group, once per provisioner, before its first create) is not in that counter."
    )
    md = write_results("provisioning_capi", rows=rows, extra={"runs": RUNS}, notes=notes)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
