"""Fixtures of the demo tests: our CRD and the Gateway API CRDs on the management cluster."""

from __future__ import annotations

import pytest

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, upstream_crds


@pytest.fixture(scope="session")
def demo_crds(management_cluster: TestCluster) -> TestCluster:
    """Install crossfade's CRD and the pinned Gateway API CRDs (idempotent apply)."""
    management_cluster.install_crds(
        [*sorted((REPO_ROOT / "crds").glob("*.yaml")), *upstream_crds("gateway-api")]
    )
    return management_cluster
