"""A watch that goes silent (connection open, no events): the operator notices and re-watches.

The operator talks to the management apiserver through KubeFaultProxy. Once the pool is
steady, every open watch is stalled, and the spec changes meanwhile (one more warm standby
node). kopf gives up on the silent stream when its watch timeouts (handlers/settings.py)
run out, opens a new watch from the last resourceVersion it saw, receives the change and
acts on it. The test asserts the effect (the standby grows, the status observes the new
generation) and that it came through a new watch request, not the stalled one.

While the watch lags, the operator must not mix up the stale object the watch last showed
with the answers to its own writes: its status writes never go back to an older
generation (regression guard: they used to alternate between the two, rebuilding the
pool's runtime, node watches included, on every pass).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from crossfade.handlers.settings import WATCH_CLIENT_TIMEOUT_S, WATCH_INACTIVITY_TIMEOUT_S
from crossfade.testing.kube_fault_proxy import KubeFaultProxy
from tests.e2e.world import GROUP, PLURAL, POOL_NAME, VERSION, World, eventually
from tests.faults.support import AWS_ALL, operator_log_problems, start_operator_via

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

STEADY_TIMEOUT_S = 60.0
# The stalled watch is given up after the shorter of kopf's two watch timeouts at the
# latest (counted from when that watch was opened), then the change still has to be acted on.
NOTICE_TIMEOUT_S = min(WATCH_CLIENT_TIMEOUT_S, WATCH_INACTIVITY_TIMEOUT_S) + 30.0
POOLS_COLLECTION = f"/{PLURAL}"
QUIET_S = 3.0


def set_warm_standby(world: World, nodes: int) -> int:
    """Patch the pool's warm standby size; return the new generation."""
    with world.cluster.api_client() as api:
        body: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            PLURAL,
            POOL_NAME,
            {"spec": {"failover": {"warmStandbyNodes": nodes}}},
        )
    return int(body["metadata"]["generation"])


def pool_writes(proxy: KubeFaultProxy, *, since: float) -> list[tuple[float, str, bytes]]:
    """Writes to the pool (object or status) that went through the proxy after ``since``."""
    return [
        (at, path, body)
        for at, method, path, body in proxy.requests
        if method != "GET" and at >= since and f"/{PLURAL}/{POOL_NAME}" in path
    ]


def quiet(proxy: KubeFaultProxy) -> bool:
    """No write to the pool for QUIET_S: the watch has caught up with the operator's writes."""
    return not pool_writes(proxy, since=time.monotonic() - QUIET_S)


def observed_generations(proxy: KubeFaultProxy, *, since: float) -> list[int]:
    """Every observedGeneration the operator wrote into the status after ``since``, in order."""
    found: list[int] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "observedGeneration" and isinstance(value, int):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for _, path, body in pool_writes(proxy, since=since):
        if path.split("?")[0].endswith("/status"):
            walk(json.loads(body))
    return found


def observed_generation(world: World) -> int | None:
    value = (world.pool().get("status") or {}).get("observedGeneration")
    return int(value) if value is not None else None


async def test_stalled_watch_is_replaced_and_the_change_made_meanwhile_is_applied(
    world: World,
) -> None:
    proxy = KubeFaultProxy(
        upstream=world.cluster.server, ssl_context=world.cluster.ssl_context()
    ).start()
    try:
        op = start_operator_via(world, kubeconfig=proxy.kubeconfig())
        await op.wait_ready()
        await eventually(
            lambda: (
                world.route_weights() == AWS_ALL
                and (world.pool().get("status") or {}).get("healthyPlacements") == "2/2"
                and world.gke_nodes() == 1
                and quiet(proxy)
            ),
            timeout_s=STEADY_TIMEOUT_S,
            what="steady state on aws with one warm standby node, no writes for a while",
        )
        before = len(proxy.watches_of(POOLS_COLLECTION))
        assert before >= 1, "the operator watches its pools through the proxy"
        stalled = proxy.stall_watches()
        stalled_at = time.monotonic()
        generation = set_warm_standby(world, 2)
        applied_at = await eventually(
            lambda: (
                time.monotonic()
                if world.gke_nodes() == 2 and observed_generation(world) == generation
                else None
            ),
            timeout_s=NOTICE_TIMEOUT_S,
            what=f"the standby grown to 2 and generation {generation} observed",
        )
        rewatches = proxy.watches_of(POOLS_COLLECTION)[before:]
        figures = {
            "stalled_streams": stalled,
            "pool_rewatches": len(rewatches),
            "first_rewatch_after_s": (
                round(rewatches[0].started_at - stalled_at, 1) if rewatches else None
            ),
            "applied_after_s": round(applied_at - stalled_at, 1),
        }
        print(f"\n[faults] watch stall: {json.dumps(figures)}")
        assert rewatches, "no new watch of the pools after the stall"
        assert rewatches[0].started_at <= applied_at, "the change arrived before any new watch"
        assert "resourceVersion=" in rewatches[0].path, "the new watch resumes where it stopped"
        generations = observed_generations(proxy, since=stalled_at)
        assert generations == sorted(generations), (
            f"status writes went back to an older generation while the watch was stalled: "
            f"{generations}"
        )
        assert not operator_log_problems(op), operator_log_problems(op)
    finally:
        proxy.stop()
