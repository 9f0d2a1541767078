"""pytest plugin: real kube-apiserver + etcd clusters for the whole session.

Fixtures:
- ``control_plane``: one etcd shared by every apiserver (each under its own etcd prefix).
- ``management_cluster``: where InferencePools, HTTPRoutes and the operator's leases live.
- ``cloud_clusters``: {"aws": ..., "gcp": ...}, the clusters the placements' nodes join.
- ``namespace``: a fresh namespace in the management cluster for one test.

The clusters start lazily, the first time a test asks for one, so unit-only runs stay fast.
Logs of every process are copied to ``.testenv-logs/`` when the session has failures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossfade.testing.controlplane import REPO_ROOT, ControlPlane, TestCluster

LOG_DIR = REPO_ROOT / ".testenv-logs"
CLOUD_CLUSTER_NAMES = ("aws", "gcp")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the real test control plane")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    cluster_fixtures = {"control_plane", "management_cluster", "cloud_clusters", "namespace"}
    for item in items:
        if cluster_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    plane = ControlPlane.create()
    yield plane
    failed = request.session.testsfailed > 0 or os.environ.get("CROSSFADE_KEEP_LOGS") == "1"
    plane.stop(keep_logs_in=LOG_DIR if failed else None)
    if failed:
        print(f"\n[testenv] control-plane logs kept in {LOG_DIR}")


@pytest.fixture(scope="session")
def management_cluster(control_plane: ControlPlane) -> TestCluster:
    return control_plane.start_cluster("management")


@pytest.fixture(scope="session")
def cloud_clusters(control_plane: ControlPlane) -> dict[str, TestCluster]:
    return {name: control_plane.start_cluster(name) for name in CLOUD_CLUSTER_NAMES}


@pytest.fixture
def namespace(management_cluster: TestCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client

    base = request.node.name.lower()
    safe = "".join(ch if ch.isalnum() else "-" for ch in base).strip("-")[:40].strip("-")
    name = f"{safe}-{uuid.uuid4().hex[:6]}"
    with management_cluster.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
    yield name
    # No controller-manager runs, so a deleted namespace would stay Terminating forever;
    # namespaces are left in place (the etcd data dir is thrown away with the session).


def cluster_log_dir() -> Path:
    """Return where logs of a failed session are kept."""
    return LOG_DIR
