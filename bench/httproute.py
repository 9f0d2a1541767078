"""HTTPRoute router: time from a plan to its weights being visible through a watch.

Starts one real etcd + kube-apiserver, installs the upstream Gateway API CRDs, creates two
Services and an HTTPRoute, then applies SHIFTS alternating plans through HTTPRouteRouter
while a watch on the route records when each plan's weights arrive. Reports p50/p99 of
plan -> visible and of the apply call, and apiserver writes per shift (goal: one).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import spread, write_results
from crossfade.routers.httproute import (
    GATEWAY_GROUP,
    HTTPROUTE_PLURAL,
    HTTPROUTE_VERSION,
    BackendRef,
    HTTPRouteRouter,
    HTTPRouteTarget,
)
from crossfade.testing.controlplane import ControlPlane, TestCluster, upstream_crds

SHIFTS = 200
NAMESPACE = "default"
ROUTE = "chat"
WATCH_TIMEOUT_S = 10.0


def setup(cluster: TestCluster) -> tuple[BackendRef, BackendRef]:
    cluster.install_crds(upstream_crds("gateway-api"))
    backends = (
        BackendRef(placement="aws", name="llm-aws", port=8000),
        BackendRef(placement="gcp", name="llm-gcp", port=8000),
    )
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": b.name, "namespace": NAMESPACE},
            "spec": {"ports": [{"port": 8000}]},
        }
        for b in backends
    ]
    docs.append(
        {
            "apiVersion": f"{GATEWAY_GROUP}/{HTTPROUTE_VERSION}",
            "kind": "HTTPRoute",
            "metadata": {"name": ROUTE, "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [
                    {
                        "filters": [
                            {
                                "type": "RequestHeaderModifier",
                                "requestHeaderModifier": {"set": [{"name": "x", "value": "y"}]},
                            }
                        ],
                        "backendRefs": [
                            {"name": b.name, "port": 8000, "weight": 1} for b in backends
                        ],
                    }
                ],
            },
        }
    )
    deadline = time.monotonic() + 30
    while True:  # a fresh CRD's storage answers 429 for a moment
        try:
            cluster.apply_manifest(docs)
            return backends
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def watch_weights(api: Any, seen: dict[tuple[int, ...], float], ready: asyncio.Event) -> None:
    """Record the first time each weight tuple is seen on the route."""
    from kubernetes_asyncio import client, watch

    custom = client.CustomObjectsApi(api)
    stream = watch.Watch()
    ready.set()
    async with stream.stream(
        custom.list_namespaced_custom_object,
        GATEWAY_GROUP,
        HTTPROUTE_VERSION,
        NAMESPACE,
        HTTPROUTE_PLURAL,
        field_selector=f"metadata.name={ROUTE}",
        timeout_seconds=600,
    ) as events:
        async for event in events:
            obj = event["object"]
            refs = obj["spec"]["rules"][0]["backendRefs"]
            seen.setdefault(tuple(ref["weight"] for ref in refs), time.perf_counter())


async def measure(cluster: TestCluster, backends: tuple[BackendRef, BackendRef]) -> dict[str, Any]:
    api = await cluster.async_api_client()
    watch_api = await cluster.async_api_client()
    seen: dict[tuple[int, ...], float] = {}
    ready = asyncio.Event()
    watcher = asyncio.create_task(watch_weights(watch_api, seen, ready))
    await ready.wait()
    router = HTTPRouteRouter(
        api_client=api,
        target=HTTPRouteTarget(namespace=NAMESPACE, name=ROUTE, backends=backends),
    )
    visible_ms: list[float] = []
    apply_ms: list[float] = []
    writes: list[int] = []
    try:
        for shift in range(SHIFTS):
            aws = 1 + (shift * 37) % 99  # every plan differs from the previous one
            plan = {"aws": aws, "gcp": 100 - aws}
            expected = (plan["aws"] * 10_000, plan["gcp"] * 10_000)
            seen.pop(expected, None)
            started = time.perf_counter()
            result = await router.apply(plan)
            applied = time.perf_counter()
            deadline = applied + WATCH_TIMEOUT_S
            while expected not in seen:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"weights {expected} never seen through the watch")
                await asyncio.sleep(0.0005)
            visible_ms.append((seen[expected] - started) * 1000)
            apply_ms.append((applied - started) * 1000)
            writes.append(result.writes)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await api.close()
        await watch_api.close()
    return {"visible_ms": visible_ms, "apply_ms": apply_ms, "writes": writes}


def main() -> int:
    plane = ControlPlane.create()
    try:
        cluster = plane.start_cluster("bench-httproute")
        backends = setup(cluster)
        samples = asyncio.run(measure(cluster, backends))
    finally:
        plane.stop()
    rows = []
    for metric in ("visible_ms", "apply_ms"):
        stats = spread(samples[metric])
        ordered = sorted(samples[metric])
        rows.append(
            {
                "metric": f"plan -> {metric.removesuffix('_ms')} (ms)",
                "p50": stats["median"],
                "p99": stats["p99"],
                "max": stats["max"],
                "n": len(ordered),
            }
        )
    writes = samples["writes"]
    rows.append(
        {
            "metric": "apiserver writes per shift",
            "p50": float(sorted(writes)[len(writes) // 2]),
            "p99": float(sorted(writes)[min(len(writes) - 1, round(0.99 * (len(writes) - 1)))]),
            "max": float(max(writes)),
            "n": len(writes),
        }
    )
    md = write_results(
        "httproute",
        rows=rows,
        extra={"shifts": SHIFTS, "mean_writes_per_shift": sum(writes) / len(writes)},
    )
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
