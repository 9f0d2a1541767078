"""Pass duration with one slow endpoint: inference probes inside the pass vs on the scheduler.

One pool, two placements with fake OpenAI-compatible endpoints on loopback: ``aws`` answers
after ``SLOW_DELAY_S`` (below the probe timeout, so it is slow, not failing), ``gke`` at
once. The same pass (handlers.reconcile.reconcile_once, no clouds or nodes wired) runs
``PASSES`` times, one pass period apart, twice:

- inline: the pass awaits every placement's probe (the operator before issue 10's
  scheduler wiring);
- scheduled: probes run on the process's ProbeScheduler at healthCheck periodSeconds, and
  the pass drains what arrived.

Reported: pass duration (s) and how many results of the healthy placement the engine got
per probe period (1.0 = it kept its period).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.common import spread, write_results
from crossfade.handlers.probe_feed import ScheduledProbes
from crossfade.handlers.reconcile import reconcile_once
from crossfade.handlers.wiring import SharedClients, build_runtime
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer

PASSES = 12
PERIOD_S = 1
SLOW_DELAY_S = 2.0
PROBE_TIMEOUT_S = 3


def spec(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "placements": [
            {
                "name": name,
                "priority": priority,
                "role": role,
                "provider": {"type": provider},
                "nodes": {"min": 0, "max": 2},
                "endpoint": {"url": urls[name]},
            }
            for name, priority, role, provider in (
                ("aws", 100, "Primary", "EKSNodeGroup"),
                ("gke", 50, "Standby", "GKENodePool"),
            )
        ],
        "healthCheck": {
            "inference": {
                "periodSeconds": PERIOD_S,
                "timeoutSeconds": PROBE_TIMEOUT_S,
                "failureThreshold": 3,
            }
        },
        "failover": {"automatic": True},
    }


async def measure(mode: str, urls: dict[str, str]) -> dict[str, Any]:
    session = aiohttp.ClientSession()
    clients = SharedClients(http=session, probes=ScheduledProbes() if mode == "scheduled" else None)
    pool_spec = spec(urls)
    body = {"metadata": {"name": "chat", "namespace": "bench", "uid": "u"}, "spec": pool_spec}
    try:
        runtime, problems = await build_runtime(
            spec=pool_spec, namespace="bench", name="chat", clients=clients
        )
        assert not problems, problems
        durations: list[float] = []
        healthy_results = 0
        started = time.monotonic()
        for _ in range(PASSES):
            begun = time.monotonic()
            outcome = await reconcile_once(body=body, runtime=runtime, now=time.time())
            durations.append(time.monotonic() - begun)
            assert outcome.observations is not None
            healthy_results += sum(p.placement == "gke" for p in outcome.observations.probes)
            await asyncio.sleep(max(0.0, PERIOD_S - durations[-1]))
        elapsed = time.monotonic() - started
        await runtime.close()
    finally:
        await clients.close()
    stats = spread(durations)
    return {
        "mode": mode,
        "passes": PASSES,
        "pass_s_median": round(stats["median"], 4),
        "pass_s_max": round(stats["max"], 4),
        "healthy_results_per_period": round(healthy_results / (elapsed / PERIOD_S), 2),
    }


async def main() -> None:
    aws, gke = FakeInferenceServer(), FakeInferenceServer()
    urls = {"aws": await aws.start(), "gke": await gke.start()}
    aws.set_behaviour(Behaviour.SLOW, delay_s=SLOW_DELAY_S)
    try:
        rows = [await measure("inline", urls), await measure("scheduled", urls)]
    finally:
        await aws.stop()
        await gke.stop()
    for row in rows:
        print(row)
    write_results(
        "pass_duration",
        rows=rows,
        notes=(
            f"One endpoint answers after {SLOW_DELAY_S} s (probe timeout {PROBE_TIMEOUT_S} s, "
            f"periodSeconds {PERIOD_S}). Inline, every pass waits for it and the healthy "
            "placement is probed once per pass; scheduled, the pass only drains results "
            "and each probe keeps its own period."
        ),
    )


if __name__ == "__main__":
    asyncio.run(main())
