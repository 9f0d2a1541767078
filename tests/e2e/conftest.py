"""Fixtures of the end-to-end tests: CRDs, moto, the GKE test server, fake endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, upstream_crds
from crossfade.testing.inference_server import FakeInferenceServer
from crossfade.testing.node_simulator import NodeSimulator, SimulatedNodeGroup
from tests.support.moto_server import aws_env, moto_server

from .world import (
    GCP_LOCATION,
    GCP_PROJECT,
    GKE_CLUSTER,
    REGION,
    SERVICES,
    World,
    create_eks_nodegroup,
    gke_test_server,
    http_route,
    kubeconfig_secret,
    pool_manifest,
    service,
)

__all__ = ["aws_env", "moto_server"]

CRD_SERVED_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def e2e_crds(management_cluster: TestCluster) -> TestCluster:
    """Install crossfade's CRD and the pinned Gateway API CRDs once, wait until served."""
    management_cluster.install_crds(
        [REPO_ROOT / "crds" / "inferencepools.crossfade.dev.yaml", *upstream_crds("gateway-api")]
    )
    deadline = time.monotonic() + CRD_SERVED_TIMEOUT_S
    with management_cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        for group, version, plural in (
            ("crossfade.dev", "v1alpha1", "inferencepools"),
            ("gateway.networking.k8s.io", "v1", "httproutes"),
        ):
            while True:
                try:
                    custom.list_namespaced_custom_object(group, version, "default", plural)
                    break
                except ApiException as exc:
                    if exc.status != 429 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    return management_cluster


@pytest.fixture
async def world(
    e2e_crds: TestCluster,
    cloud_clusters: dict[str, TestCluster],
    namespace: str,
    moto_server: str,
    aws_env: None,
    tmp_path: Path,
) -> AsyncIterator[World]:
    """A pool serving from AWS (2 nodes) with a cold GKE standby, not yet operated.

    Nodes appear in the "aws" and "gcp" apiservers as the clouds' sizes change (node
    simulators), and the pool reaches them through kubeconfig Secrets (clusterRef).
    """
    eks_cluster, nodegroup = create_eks_nodegroup(moto_server)
    node_pool = f"gpu-{uuid.uuid4().hex[:6]}"
    aws_server, gke_server = FakeInferenceServer(), FakeInferenceServer()
    aws_url, gke_url = await aws_server.start(), await gke_server.start()
    with gke_test_server() as gke:
        full_name = (
            f"projects/{GCP_PROJECT}/locations/{GCP_LOCATION}/clusters/{GKE_CLUSTER}"
            f"/nodePools/{node_pool}"
        )
        gke.state.add_pool(full_name, node_count=0)
        e2e_crds.apply_manifest(
            [
                service(SERVICES["aws"], namespace),
                service(SERVICES["gke"], namespace),
                http_route(namespace, aws_weight=100, gke_weight=0),
            ],
            namespace=namespace,
        )
        e2e_crds.apply_manifest(
            [
                kubeconfig_secret("aws-kubeconfig", namespace, cloud_clusters["aws"]),
                kubeconfig_secret("gcp-kubeconfig", namespace, cloud_clusters["gcp"]),
            ],
            namespace=namespace,
        )
        w_eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)

        async def eks_desired() -> int:
            group = w_eks.describe_nodegroup(clusterName=eks_cluster, nodegroupName=nodegroup)
            return int(group["nodegroup"]["scalingConfig"]["desiredSize"])

        async def gke_desired() -> int:
            return gke.state.node_count(full_name)

        aws_api = await cloud_clusters["aws"].async_api_client()
        gcp_api = await cloud_clusters["gcp"].async_api_client()
        sims = [
            NodeSimulator(
                api=aws_api,
                group=SimulatedNodeGroup.eks(nodegroup, accelerators_per_node=1, boot_delay_s=1.0),
                desired_size=eks_desired,
            ),
            NodeSimulator(
                api=gcp_api,
                group=SimulatedNodeGroup.gke(node_pool, accelerators_per_node=1, boot_delay_s=2.0),
                desired_size=gke_desired,
            ),
        ]
        sim_stop = asyncio.Event()
        sim_tasks = [asyncio.create_task(sim.run(period_s=0.5, stop=sim_stop)) for sim in sims]
        e2e_crds.apply_manifest(
            pool_manifest(
                namespace,
                aws_url=aws_url,
                gke_url=gke_url,
                cluster=eks_cluster,
                nodegroup=nodegroup,
                node_pool=node_pool,
            ),
            namespace=namespace,
        )
        w = World(
            cluster=e2e_crds,
            namespace=namespace,
            moto_url=moto_server,
            gke=gke,
            aws_server=aws_server,
            gke_server=gke_server,
            eks_cluster=eks_cluster,
            nodegroup=nodegroup,
            node_pool_name=full_name,
            tmp=tmp_path,
        )
        try:
            yield w
        finally:
            for op in w.operators:
                op.stop()
            sim_stop.set()
            await asyncio.gather(*sim_tasks, return_exceptions=True)
            await aws_api.close()
            await gcp_api.close()
            await aws_server.stop()
            await gke_server.stop()
            with contextlib.suppress(Exception):
                print("\n--- pool status ---\n" + json.dumps(w.pool().get("status"), indent=1))
                print("--- events ---\n" + "\n".join(map(str, w.events())))
            for index, op in enumerate(w.operators):
                print(f"\n--- operator {index} log tail ---\n{op.log_tail(60)}")


def results_rows(
    measured: dict[str, dict[str, float]], previous: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Return one row per (scenario, figure): this run's figures replace earlier ones."""
    kept = [row for row in previous if row.get("scenario") not in measured]
    fresh = [
        {"scenario": scenario, "figure": figure, "value": value}
        for scenario, figures in measured.items()
        for figure, value in figures.items()
    ]
    return sorted(kept + fresh, key=lambda row: (str(row["scenario"]), str(row["figure"])))


@pytest.fixture(scope="session", autouse=True)
def e2e_figures() -> Iterator[dict[str, dict[str, float]]]:
    """After the session, write the scenarios' figures to bench/results/e2e.{json,md}."""
    from bench.common import RESULTS_DIR, write_results

    from .test_failover import RESULTS

    yield RESULTS
    if not RESULTS:
        return
    previous: list[dict[str, object]] = []
    stored = RESULTS_DIR / "e2e.json"
    if stored.exists():
        with contextlib.suppress(ValueError, KeyError):
            previous = list(json.loads(stored.read_text())["rows"])
    write_results("e2e", rows=results_rows(RESULTS, previous))
