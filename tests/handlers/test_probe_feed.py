"""Inference probes run on the process's ProbeScheduler; a pass only drains their results.

A hung endpoint holds its own probe until the probe's timeout, never the pass: passes
return while the hung request is still open, and the healthy placement's results keep
arriving at their period meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.handlers.probe_feed import ScheduledProbes
from crossfade.handlers.reconcile import reconcile_once
from crossfade.handlers.wiring import SharedClients, build_runtime
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer

from .fakes import fast_spec, pool_body

HUNG_PROBE_TIMEOUT_S = 30
PROBE_PERIOD_S = 10
PASS_INTERVAL_S = 0.05
MAX_PASSES = 200


class FirstRunAtOnce(random.Random):
    """The scheduler spreads first runs over a period; these tests want them at once."""

    def uniform(self, a: float, b: float) -> float:
        return a


def spec_with(urls: dict[str, str]) -> dict[str, Any]:
    spec = fast_spec()
    for placement in spec["placements"]:
        placement["endpoint"] = {"url": urls[placement["name"]]}
    spec["healthCheck"]["inference"].update(
        periodSeconds=PROBE_PERIOD_S, timeoutSeconds=HUNG_PROBE_TIMEOUT_S, failureThreshold=3
    )
    return spec


@contextlib.asynccontextmanager
async def endpoints(aws: Behaviour) -> AsyncIterator[dict[str, FakeInferenceServer]]:
    found = {"aws": FakeInferenceServer(), "gke": FakeInferenceServer()}
    for server in found.values():
        await server.start()
    found["aws"].set_behaviour(aws)
    try:
        yield found
    finally:
        for server in found.values():
            await server.stop()


async def test_a_hung_endpoint_does_not_hold_the_pass() -> None:
    async with endpoints(Behaviour.HANG) as servers:
        spec = spec_with({name: server.base_url for name, server in servers.items()})
        clients = SharedClients(
            http=aiohttp.ClientSession(), probes=ScheduledProbes(rng=FirstRunAtOnce())
        )
        try:
            runtime, problems = await build_runtime(
                spec=spec, namespace="ns", name="chat", clients=clients
            )
            assert problems == []
            assert all(o.probe is None for o in runtime.observers), "no probe inside the pass"
            body = pool_body(spec)
            seen: list[ProbeResult] = []
            passes = 0
            for passes in range(1, MAX_PASSES + 1):  # noqa: B007 - reported below
                outcome = await reconcile_once(body=body, runtime=runtime, now=time.time())
                assert outcome.observations is not None
                seen.extend(outcome.observations.probes)
                if seen and servers["aws"].requests.count >= 1:
                    break
                await asyncio.sleep(PASS_INTERVAL_S)
            # Passes returned while the hung request is open: its probe has not reported.
            assert servers["aws"].requests.count == 1, passes
            assert [p.placement for p in seen] == ["gke"], seen
            assert seen[0].outcome is ProbeOutcome.HEALTHY
            await runtime.close()
            assert clients.probes is not None
            assert clients.probes.scheduler.task_count() == 0, "closing the runtime stops probes"
        finally:
            await clients.close()


async def test_a_rebuilt_runtime_keeps_the_running_probes() -> None:
    async with endpoints(Behaviour.HEALTHY) as servers:
        spec = spec_with({name: server.base_url for name, server in servers.items()})
        clients = SharedClients(
            http=aiohttp.ClientSession(), probes=ScheduledProbes(rng=FirstRunAtOnce())
        )
        try:
            old, _ = await build_runtime(spec=spec, namespace="ns", name="chat", clients=clients)
            await reconcile_once(body=pool_body(spec), runtime=old, now=time.time())
            assert clients.probes is not None
            tasks = set(clients.probes.scheduler.tasks())
            assert len(tasks) == 2
            new, _ = await build_runtime(spec=spec, namespace="ns", name="chat", clients=clients)
            await old.close()  # as handlers/pools.py does after a spec change
            body = pool_body(spec, generation=2)
            await reconcile_once(body=body, runtime=new, now=time.time())
            assert set(clients.probes.scheduler.tasks()) == tasks, "unchanged probes keep tasks"
            await new.close()
            assert clients.probes.scheduler.task_count() == 0
        finally:
            await clients.close()
