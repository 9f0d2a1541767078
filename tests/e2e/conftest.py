"""Fixtures of the end-to-end tests: CRDs, moto, the GKE test server, fake endpoints."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, upstream_crds
from tests.support.moto_server import aws_env, moto_server

from .world import Endpoints, World, create_eks_nodegroup, pool_manifest, running_world

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

    def pool(endpoints: Endpoints) -> dict[str, Any]:
        return pool_manifest(
            namespace,
            aws_url=endpoints.aws_url,
            gke_url=endpoints.gke_url,
            cluster=eks_cluster,
            nodegroup=nodegroup,
            node_pool=endpoints.node_pool,
        )

    async with running_world(
        cluster=e2e_crds,
        cloud_clusters=cloud_clusters,
        namespace=namespace,
        moto_url=moto_server,
        tmp=tmp_path,
        eks_cluster=eks_cluster,
        nodegroup=nodegroup,
        primary="aws",
        pool=pool,
        gke_boot_delay_s=2.0,
    ) as w:
        yield w


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
