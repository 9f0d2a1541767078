"""A malformed kubeconfig Secret gives a clear, visible reason and no crash; serving goes on."""

from __future__ import annotations

import base64
import json
import time

import pytest
from kubernetes import client

from tests.e2e.world import World, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

REPORT_TIMEOUT_S = 45.0
HOSTILE_KUBECONFIGS = {
    "not-yaml": b"clusters: [unterminated",
    "no-clusters": b"apiVersion: v1\nkind: Config\nusers: []\n",
}


def replace_secret(world: World, *, name: str, raw: bytes) -> None:
    with world.cluster.api_client() as api:
        client.CoreV1Api(api).patch_namespaced_secret(
            name, world.namespace, {"data": {"value": base64.b64encode(raw).decode()}}
        )


def visible_text(world: World) -> str:
    """Everything an operator user sees: the pool status and its events."""
    status = json.dumps(world.pool().get("status") or {})
    events = " ".join(message for _, _, message in world.events())
    return f"{status} {events}"


@pytest.mark.parametrize("case", sorted(HOSTILE_KUBECONFIGS))
async def test_malformed_kubeconfig_secret_is_reported_without_crash(
    world: World, case: str
) -> None:
    replace_secret(world, name="gcp-kubeconfig", raw=HOSTILE_KUBECONFIGS[case])
    op = world.operator()
    await op.wait_ready()
    started = time.monotonic()
    text = await eventually(
        lambda: (lambda t: t if "gcp-kubeconfig" in t else None)(visible_text(world)),
        timeout_s=REPORT_TIMEOUT_S,
        what="the bad Secret named in status or events",
    )
    print(f"\n[faults] bad kubeconfig {case}: reported in {time.monotonic() - started:.1f}s")
    assert op.alive(), op.log_tail()
    assert "Traceback" not in op.log_path.read_text(errors="replace")
    assert "clusters: [unterminated" not in text, "Secret content must not be echoed"
    assert world.route_weights() == {"aws": 100, "gke": 0}, "the healthy primary keeps serving"
