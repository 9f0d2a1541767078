"""The three probe kinds run under the scheduler and land in the buffer as engine input."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from kubernetes_asyncio import client

from crossfade.engine.observations import ProbeOutcome
from crossfade.probes.breaker import CircuitBreaker
from crossfade.probes.buffer import ObservationBuffer
from crossfade.probes.cloud import CloudProbe
from crossfade.probes.inference import InferenceProbeConfig, new_session
from crossfade.probes.nodes import NodeCache
from crossfade.probes.scheduler import Observation, ProbeScheduler
from crossfade.probes.specs import cloud_spec, inference_spec, node_spec
from crossfade.providers.base import NodeGroupState
from crossfade.testing.controlplane import TestCluster
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer

WAIT_S = 10.0


class Waiter:
    def __init__(self, buffer: ObservationBuffer) -> None:
        self.buffer = buffer
        self.changed = asyncio.Event()
        self.errors: list[str] = []
        self.kinds: Counter[str] = Counter()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def add(self, pool: str, observation: Observation) -> None:
        self.buffer.add(pool, observation)
        self.kinds[type(observation).__name__] += 1
        self.changed.set()

    def add_error(self, pool: str, message: str) -> None:
        self.buffer.add_error(pool, message)
        self.errors.append(message)
        self.changed.set()


class Provider:
    async def describe(self) -> NodeGroupState:
        return NodeGroupState(
            desired=2, min_size=0, max_size=4, ready=2, status="ACTIVE", updating=False
        )


async def test_inference_and_cloud_probes_feed_the_buffer() -> None:
    buffer = ObservationBuffer()
    waiter = Waiter(buffer)
    async with FakeInferenceServer() as server, new_session() as session:
        server.set_behaviour(Behaviour.HANG)
        specs = [
            inference_spec(
                session,
                placement="aws",
                config=InferenceProbeConfig(url=server.base_url, timeout_s=0.05),
                period_s=0.02,
            ),
            cloud_spec(
                CloudProbe(placement="aws", provider=Provider(), breaker=CircuitBreaker()),
                period_s=0.02,
            ),
        ]
        async with ProbeScheduler(sink=waiter.add, error_sink=waiter.add_error) as scheduler:
            await scheduler.set_pool("pool", specs)
            await waiter.until(
                lambda: (
                    waiter.kinds["ProbeResult"] >= 2 and waiter.kinds["ProviderObservation"] >= 1
                )
            )
    observed = buffer.drain("pool")
    assert observed.probes and all(p.outcome is ProbeOutcome.FAILING for p in observed.probes)
    assert observed.probes[0].detail.startswith("Timeout")
    latest = observed.latest_provider("aws")
    assert latest is not None and latest.desired == 2 and latest.error is None


@pytest.mark.cluster
async def test_node_spec_reports_cache_contents_and_errors_before_sync(
    cloud_clusters: dict[str, TestCluster],
) -> None:
    buffer = ObservationBuffer()
    waiter = Waiter(buffer)
    api = await cloud_clusters["gcp"].async_api_client()
    async with api:
        await client.CoreV1Api(api).create_node(
            client.V1Node(
                metadata=client.V1ObjectMeta(
                    name="spec-node-1", labels={"cloud.google.com/gke-nodepool": "spec-pool"}
                )
            )
        )
        cache = NodeCache(api, selector="cloud.google.com/gke-nodepool=spec-pool")
        async with ProbeScheduler(sink=waiter.add, error_sink=waiter.add_error) as scheduler:
            await scheduler.set_pool("pool", [node_spec(cache, placement="gke", period_s=0.02)])
            await waiter.until(lambda: bool(waiter.errors))
            before_sync = buffer.drain("pool")
            assert before_sync.errors and before_sync.errors[0].startswith(
                "nodes/gke: NotReady: NodeCacheNotSyncedError"
            )
            async with cache:
                await waiter.until(lambda: buffer.pending("pool") > 0)
        nodes = buffer.drain("pool").latest_nodes("gke")
    assert nodes is not None and (nodes.total_nodes, nodes.ready_nodes) == (1, 0)
