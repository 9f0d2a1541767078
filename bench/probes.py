"""Prober cost: 1000 inference endpoints probed every 10 s — CPU, memory, delivery latency.

The fake OpenAI-compatible servers run in their own processes, so the CPU and memory
measured here are the prober's alone (scheduler + aiohttp client + classification). Each
endpoint is a distinct URL prefix; endpoints are spread over several server ports. Three
scenarios, each for a bounded duration:

- keepalive: connections are reused between probes of an endpoint (the usual case);
- fresh-connection: a new TCP connection per probe (the worst case for the prober);
- 10pct-hanging: a tenth of the endpoints hang until their timeout; latency is reported
  for the healthy ones, to show the hung ones do not delay them.

"Delivery latency" is from the moment a probe was due to the moment its observation
reached the sink (waiting for a concurrency slot + the probe itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.common import spread, write_results
from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.inference import InferenceProbeConfig, probe_inference
from crossfade.probes.scheduler import Observation, ProbeScheduler, ProbeSpec

ENDPOINTS = 1000
PERIOD_S = 10.0
PLACEMENTS_PER_POOL = 4
SERVER_PROCESSES = 4
PROBE_TIMEOUT_S = 2.0
MAX_CONCURRENCY = 64
PER_POOL_CONCURRENCY = 4
DEFAULT_DURATION_S = 45.0
HANGING_SHARE = 0.1


@dataclass
class Scenario:
    name: str
    force_close: bool
    hanging_share: float


SCENARIOS = (
    Scenario("keepalive", force_close=False, hanging_share=0.0),
    Scenario("fresh-connection", force_close=True, hanging_share=0.0),
    Scenario("10pct-hanging", force_close=False, hanging_share=HANGING_SHARE),
)


def start_server(behaviour: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "crossfade.testing.inference_server", "--behaviour", behaviour],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, str(json.loads(line)["url"])


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_scenario(scenario: Scenario, *, duration_s: float) -> dict[str, float | str]:
    healthy_servers = [start_server("healthy") for _ in range(SERVER_PROCESSES)]
    hanging_server = start_server("hang") if scenario.hanging_share else None
    try:
        return await _measure(
            scenario,
            duration_s=duration_s,
            healthy_urls=[url for _, url in healthy_servers],
            hanging_url=hanging_server[1] if hanging_server else None,
        )
    finally:
        for process, _ in [*healthy_servers, *([hanging_server] if hanging_server else [])]:
            process.terminate()
            process.wait(timeout=10)


async def _measure(
    scenario: Scenario, *, duration_s: float, healthy_urls: list[str], hanging_url: str | None
) -> dict[str, float | str]:
    rss_before_mib = rss_mib()
    hanging_count = int(ENDPOINTS * scenario.hanging_share)
    outcomes: Counter[str] = Counter()
    probe_ms: list[float] = []
    hanging: set[str] = set()

    def sink(pool: str, observation: Observation) -> None:
        assert isinstance(observation, ProbeResult)
        outcomes[observation.outcome.value] += 1
        if observation.latency_ms is not None and observation.placement not in hanging:
            probe_ms.append(observation.latency_ms)

    connector = aiohttp.TCPConnector(limit=MAX_CONCURRENCY, force_close=scenario.force_close)
    scheduler = ProbeScheduler(
        sink=sink, max_concurrency=MAX_CONCURRENCY, per_pool_concurrency=PER_POOL_CONCURRENCY
    )
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        specs: dict[str, list[ProbeSpec]] = {}
        for index in range(ENDPOINTS):
            placement = f"ep{index:04d}"
            if index < hanging_count and hanging_url:
                base = hanging_url
                hanging.add(placement)
            else:
                base = healthy_urls[index % len(healthy_urls)]
            config = InferenceProbeConfig(url=f"{base}/{placement}", timeout_s=PROBE_TIMEOUT_S)
            specs.setdefault(f"pool{index // PLACEMENTS_PER_POOL:04d}", []).append(
                _spec(session, placement=placement, config=config)
            )
        cpu0, wall0 = time.process_time(), time.monotonic()
        for pool, pool_specs in specs.items():
            await scheduler.set_pool(pool, pool_specs)
        # The first period spreads the probes out (initial jitter); measure after it.
        await asyncio.sleep(PERIOD_S)
        scheduler.delivery_latencies.clear()
        outcomes.clear()
        probe_ms.clear()
        runs0 = scheduler.runs
        cpu1, wall1 = time.process_time(), time.monotonic()
        await asyncio.sleep(max(0.0, duration_s - PERIOD_S))
        cpu2, wall2 = time.process_time(), time.monotonic()
        all_ms = [s * 1000 for _, _, s in scheduler.delivery_latencies]
        healthy_ms = [
            s * 1000 for _, name, s in scheduler.delivery_latencies if name not in hanging
        ]
        runs = scheduler.runs - runs0
        await scheduler.close()
    delivery = spread(all_ms) if all_ms else {}
    healthy_delivery = spread(healthy_ms) if healthy_ms else {}
    probes = spread(probe_ms) if probe_ms else {}
    return {
        "scenario": scenario.name,
        "endpoints": ENDPOINTS,
        "period_s": PERIOD_S,
        "measured_s": wall2 - wall1,
        "probes_per_s": runs / (wall2 - wall1),
        "cpu_pct_of_core": 100 * (cpu2 - cpu1) / (wall2 - wall1),
        "first_period_cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "rss_before_mib": rss_before_mib,
        "rss_mib": rss_mib(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "delivery_p50_ms": delivery.get("median", float("nan")),
        "delivery_p99_ms": delivery.get("p99", float("nan")),
        "healthy_delivery_p99_ms": healthy_delivery.get("p99", float("nan")),
        "healthy_probe_p99_ms": probes.get("p99", float("nan")),
        "healthy": outcomes[ProbeOutcome.HEALTHY.value],
        "overloaded": outcomes[ProbeOutcome.OVERLOADED.value],
        "failing": outcomes[ProbeOutcome.FAILING.value],
    }


def _spec(
    session: aiohttp.ClientSession, *, placement: str, config: InferenceProbeConfig
) -> ProbeSpec:
    async def run() -> Observation:
        return await probe_inference(session, placement=placement, config=config)

    return ProbeSpec(name=placement, period_s=PERIOD_S, timeout_s=PROBE_TIMEOUT_S + 1, run=run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration-s", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS], action="append")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    rows = []
    for scenario in chosen:
        row = asyncio.run(run_scenario(scenario, duration_s=args.duration_s))
        print(json.dumps(row), flush=True)
        rows.append(row)
    md = write_results(
        "probes",
        rows=rows,
        extra={
            "goal": "prober CPU under 15% of one core at 1000 endpoints / 10 s",
            "notes": "delivery = due -> observation in sink; healthy_probe = the HTTP probe "
            "alone, healthy endpoints only; CPU and RSS are the prober process only",
        },
    )
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
