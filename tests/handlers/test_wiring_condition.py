"""A pool whose runtime cannot be built gets Ready=False with the WiringError, written once.

status.observedGeneration advances with it: the pass read the spec it could not wire.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s

from crossfade.api.generate import CRD_PATH
from crossfade.engine.plan import ConditionStatus, ConditionType, SetCondition
from crossfade.handlers.pools import PoolWriter, wiring_failure_status
from crossfade.handlers.status import merge_conditions, status_patch
from crossfade.handlers.wiring import WiringError
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import REPO_ROOT, base_pool

GROUP, VERSION, PLURAL = "crossfade.dev", "v1alpha1", "inferencepools"
NOW = 1_800_000_000.0


@pytest.fixture
def pool_crd(management_cluster: TestCluster) -> TestCluster:
    management_cluster.install_crds([REPO_ROOT / CRD_PATH])
    return management_cluster


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    [condition] = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    return condition


async def test_wiring_failure_is_a_ready_condition_written_only_when_it_changes(
    pool_crd: TestCluster, namespace: str
) -> None:
    api = await pool_crd.async_api_client()
    custom: Any = k8s.CustomObjectsApi(api)
    body = base_pool(f"wiring-{uuid.uuid4().hex[:6]}")
    created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    name, generation = created["metadata"]["name"], created["metadata"]["generation"]
    writer = PoolWriter(api_client=api, namespace=namespace, name=name)
    error = WiringError("NoEndpoint", "placement aws-a has no endpoint.url")
    try:
        patch = wiring_failure_status(
            created.get("status") or {}, error, now=NOW, generation=generation
        )
        await writer.patch_status(patch)
        stored = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        condition = ready(stored)
        assert (condition["status"], condition["reason"]) == ("False", "NoEndpoint")
        assert condition["message"] == error.message
        assert condition["observedGeneration"] == generation
        # The pass read this generation: a spec change that cannot be wired is answered.
        assert stored["status"]["observedGeneration"] == generation

        # The same failure on the next pass changes nothing, so nothing is written.
        again = wiring_failure_status(stored["status"], error, now=NOW + 60, generation=generation)
        assert again == {}
        other = WiringError("UnknownRouter", "traffic names no router")
        changed = wiring_failure_status(
            stored["status"], other, now=NOW + 60, generation=generation
        )
        assert [c["reason"] for c in changed["conditions"] if c["type"] == "Ready"] == [
            "UnknownRouter"
        ]

        # Wiring works again: the engine's Ready of the next pass replaces the failure.
        serving = SetCondition(ConditionType.READY, ConditionStatus.TRUE, "Serving", "aws-a")
        conditions = merge_conditions(
            stored["status"]["conditions"], [serving], now=NOW + 120, observed_generation=generation
        )
        await writer.patch_status(
            status_patch(stored["status"], {**stored["status"], "conditions": conditions})
        )
        healed = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        assert (ready(healed)["status"], ready(healed)["reason"]) == ("True", "Serving")
    finally:
        await api.close()
