"""The traffic generator routes by the HTTPRoute's live weights and records what clients saw."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from crossfade.testing.controlplane import TestCluster, upstream_crds
from crossfade.testing.traffic import (
    HTTPRouteWeights,
    TrafficGenerator,
    success_rate_series,
    summarize,
)


@pytest.fixture(scope="module")
def gateway_crds(management_cluster: TestCluster) -> None:
    management_cluster.install_crds(upstream_crds("gateway-api"))


async def start_backend(status: int) -> tuple[web.AppRunner, str]:
    async def completions(_: web.Request) -> web.Response:
        return web.json_response({"choices": [{"text": "pong"}]}, status=status)

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, str]]:
    healthy, healthy_url = await start_backend(200)
    broken, broken_url = await start_backend(503)
    yield {"svc-healthy": healthy_url, "svc-broken": broken_url}
    await healthy.cleanup()
    await broken.cleanup()


def route(namespace: str, healthy: int, broken: int) -> dict[str, object]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "inference", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "svc-healthy", "port": 8000, "weight": healthy},
                        {"name": "svc-broken", "port": 8000, "weight": broken},
                    ]
                }
            ],
        },
    }


async def run_for(generator: TrafficGenerator, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(generator.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


async def test_traffic_follows_route_weights(
    management_cluster: TestCluster,
    gateway_crds: None,
    namespace: str,
    backends: dict[str, str],
) -> None:
    management_cluster.apply_manifest(route(namespace, healthy=0, broken=100))
    api = await management_cluster.async_api_client()
    async with api:
        weights = HTTPRouteWeights(api=api, namespace=namespace, name="inference")
        generator = TrafficGenerator(weights=weights, endpoints=backends, rate_per_s=40)
        await run_for(generator, 1.0)
        broken_phase_end = max(r.at for r in generator.records) + 1e-6

        management_cluster.apply_manifest(route(namespace, healthy=100, broken=0))
        await run_for(generator, 1.5)

    before = summarize(generator.records, end=broken_phase_end)
    after = summarize(generator.records, start=broken_phase_end + 0.5)
    assert before.requests > 10 and after.requests > 10
    # First phase: nothing routed until the first weights arrive, then all to the 503 backend.
    assert before.failed == before.requests
    assert set(before.by_backend) <= {"svc-broken", "(none)"}
    assert after.failed == 0
    assert set(after.by_backend) == {"svc-healthy"}
    series = success_rate_series(generator.records)
    assert series[0][1] == 0.0 and series[-1][1] == 1.0
