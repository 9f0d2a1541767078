"""PoolWriter.freshest: a lagging watch never hides the operator's own writes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from crossfade.api.generate import CRD_PATH
from crossfade.handlers.manual import FREEZE
from crossfade.handlers.pools import PoolWriter
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import REPO_ROOT, base_pool

GROUP, VERSION, PLURAL = "crossfade.dev", "v1alpha1", "inferencepools"


@pytest.fixture
def pool_crd(management_cluster: TestCluster) -> TestCluster:
    management_cluster.install_crds([REPO_ROOT / CRD_PATH])
    return management_cluster


async def _create(cluster: TestCluster, namespace: str) -> tuple[Any, Any, dict[str, Any]]:
    api = await cluster.async_api_client()
    custom: Any = k8s.CustomObjectsApi(api)
    body = base_pool(f"writer-{uuid.uuid4().hex[:6]}")
    body["metadata"]["annotations"] = {FREEZE: "true"}
    created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return api, custom, created


async def test_stale_watch_after_own_writes_never_brings_back_a_cleared_annotation(
    pool_crd: TestCluster, namespace: str
) -> None:
    api, _, stale = await _create(pool_crd, namespace)
    name = stale["metadata"]["name"]
    try:
        writer = PoolWriter(api_client=api, namespace=namespace, name=name)
        assert FREEZE in (await writer.freshest(stale))["metadata"]["annotations"]
        await writer.patch_annotations({FREEZE: None})
        # Kept until the watch catches up: without the apply bookkeeping the watch has.
        assert "managedFields" in stale["metadata"]
        assert writer.last_object is not None
        assert "managedFields" not in writer.last_object["metadata"]
        # The watch still shows the body from before both writes, pass after pass.
        for _ in range(3):
            seen = await writer.freshest(stale)
            assert FREEZE not in (seen["metadata"].get("annotations") or {})
            await writer.patch_status({"phase": f"Pass-{uuid.uuid4().hex[:4]}"})
        assert seen["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]
    finally:
        await api.close()


async def test_watch_catching_up_or_a_foreign_write_is_taken_from_the_api(
    pool_crd: TestCluster, namespace: str
) -> None:
    api, custom, stale = await _create(pool_crd, namespace)
    name = stale["metadata"]["name"]
    try:
        writer = PoolWriter(api_client=api, namespace=namespace, name=name)
        await writer.freshest(stale)
        await writer.patch_annotations({FREEZE: None})
        ours = writer.last_object
        assert ours is not None
        # The watch delivers our own write: it is current again.
        assert await writer.freshest(ours) == ours
        assert writer.last_object is None
        await writer.patch_status({"phase": "Mine"})
        # Someone else writes; the watch shows their older-or-newer body of unknown order.
        foreign = await custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"labels": {"team": "x"}}},
            _content_type="application/merge-patch+json",
        )
        seen = await writer.freshest(foreign)
        assert seen["metadata"]["labels"] == {"team": "x"}
        assert seen["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
        assert FREEZE not in (seen["metadata"].get("annotations") or {})
    finally:
        await api.close()
