"""kopf's operator loop in the test's own process, against a real test apiserver.

The caller registers its handlers on a fresh ``kopf.OperatorRegistry`` and points
``KUBECONFIG`` at the cluster; ``kopf_running`` logs in from it, runs kopf standalone in one
namespace (no cluster-wide scanning, no Events unless ``settings`` asks for them) and stops
it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from crossfade.api.generate import CRD_PATH
from crossfade.handlers.pools import GROUP, PLURAL, VERSION
from crossfade.testing.controlplane import TestCluster
from tests.api.kube import PoolClient
from tests.api.samples import REPO_ROOT

STOP_WAIT_S = 30.0


def pool_resource(registry: kopf.OperatorRegistry) -> dict[str, Any]:
    """Keyword arguments of a kopf handler decorator for InferencePools on ``registry``."""
    return {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}


def pools_served(
    cluster: TestCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> PoolClient:
    """Install the committed CRD, point KUBECONFIG (kopf's login) at ``cluster``."""
    cluster.install_crds([REPO_ROOT / CRD_PATH])
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig_path))
    return PoolClient(cluster, namespace)


@contextlib.asynccontextmanager
async def kopf_running(
    registry: kopf.OperatorRegistry,
    namespace: str,
    *,
    settings: kopf.OperatorSettings | None = None,
) -> AsyncIterator[None]:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    if settings is None:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
    settings.scanning.disabled = True
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            namespaces=[namespace],
            standalone=True,
            stop_flag=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=STOP_WAIT_S)
