"""Fixtures for API tests against the real apiserver: the CRD installed, a namespace, a client."""

from __future__ import annotations

import uuid

import pytest

from crossfade.api.generate import CRD_PATH
from crossfade.testing.controlplane import TestCluster
from tests.api.kube import PoolClient, create_namespace
from tests.api.samples import REPO_ROOT


@pytest.fixture(scope="session")
def pool_crd(management_cluster: TestCluster) -> TestCluster:
    """The management cluster with the committed InferencePool CRD installed."""
    management_cluster.install_crds([REPO_ROOT / CRD_PATH])
    return management_cluster


@pytest.fixture(scope="module")
def pools(pool_crd: TestCluster) -> PoolClient:
    """A client for InferencePools in a namespace of this test module."""
    name = f"api-{uuid.uuid4().hex[:8]}"
    create_namespace(pool_crd, name)
    return PoolClient(pool_crd, name)
