"""Recovery time: outage onset -> first HTTPRoute weight shift and -> 99% on healthy placements.

Runs the quickstart pool in the sandbox world (real apiservers, moto, GKE test server, fake
inference servers, the operator process), breaks the primary several times per probe period
and polls the HTTPRoute every few milliseconds. Published anchors are printed beside ours.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.common import spread, write_results
from crossfade.sandbox import running_sandbox
from crossfade.testing.controlplane import TestCluster
from crossfade.testing.inference_server import Behaviour
from crossfade.testing.traffic import HTTPRouteWeights
from crossfade.testing.world import World, WorldKnobs, load_documents, running_world

PROBE_PERIODS_S = tuple(int(p) for p in os.environ.get("BENCH_PROBE_PERIODS", "1,5").split(","))
RUNS_PER_PERIOD = int(os.environ.get("BENCH_RECOVERY_RUNS", "5"))
FAILURE_THRESHOLD = 3
POLL_S = 0.02
HEALTHY_SHARE = 0.99
RUN_TIMEOUT_S = 120.0
MAX_FAILOVERS_PER_HOUR = 60  # the API maximum
ENDPOINT_ONLY = "endpoint 503 only"
NODES_AND_ENDPOINT = "endpoint 503 + Nodes NotReady"
OUTAGE_KINDS = (ENDPOINT_ONLY, NODES_AND_ENDPOINT)
WORKDIR = Path(os.environ.get("BENCH_WORKDIR", "/tmp/crossfade-bench-recovery"))

ANCHORS: tuple[Mapping[str, Any], ...] = (
    {"system": "k8gb DNS failover", "basis": "TTL 30 s + reconcile 30 s", "worst_s": 60.0},
    {"system": "Route53 health checks", "basis": "30 s x 3 + TTL 60 s", "worst_s": 150.0},
    {"system": "Route53 fast health checks", "basis": "10 s x 3 + TTL 60 s", "worst_s": 90.0},
    {"system": "SkyServe", "basis": "10 s probes + ~20 s LB refresh", "worst_s": 30.0},
    {"system": "Karmada app failover", "basis": "tolerationSeconds 300", "worst_s": 300.0},
)


def bench_documents() -> list[dict[str, Any]]:
    """The quickstart with failure threshold 3 and the largest failover budget the API allows."""
    documents = load_documents()
    for doc in documents:
        if doc.get("kind") != "InferencePool":
            continue
        spec = doc["spec"]
        spec["healthCheck"]["inference"]["failureThreshold"] = FAILURE_THRESHOLD
        spec["failover"]["maxFailoversPerHour"] = MAX_FAILOVERS_PER_HOUR
    return documents


def healthy_share(weights: Mapping[str, int], *, broken_backend: str) -> float:
    """Share of route weight on backends other than the broken one."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return (total - weights.get(broken_backend, 0)) / total


def start_outage(world: World, *, kind: str) -> None:
    """Endpoint-only 503s (found by probes only) or 503s plus every Node NotReady."""
    if kind == ENDPOINT_ONLY:
        world.rigs[world.primary].server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    else:
        world.break_placement(world.primary)


async def one_outage(world: World, reader: HTTPRouteWeights, *, kind: str) -> tuple[float, float]:
    """Break the primary, return (onset->first shift, onset->99% healthy) in seconds; heal."""
    broken = world.rigs[world.primary].backend
    before = await reader.read()
    onset = time.monotonic()
    start_outage(world, kind=kind)
    first_shift: float | None = None
    deadline = onset + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        weights = await reader.read()
        now = time.monotonic() - onset
        if first_shift is None and weights != before:
            first_shift = now
        if healthy_share(weights, broken_backend=broken) >= HEALTHY_SHARE:
            world.heal_placement(world.primary)
            return first_shift if first_shift is not None else now, now
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"no recovery within {RUN_TIMEOUT_S} s: {await reader.read()}")


async def back_on_primary(world: World, reader: HTTPRouteWeights) -> None:
    """Wait until the healed primary carries all traffic again (after the failback delay)."""
    primary = world.rigs[world.primary].backend
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        weights = await reader.read()
        if sum(weights.values()) > 0 and weights.get(primary, 0) == sum(weights.values()):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the primary did not get its traffic back")


async def measure_period(
    *, management: TestCluster, clouds: Mapping[str, TestCluster], period_s: int
) -> dict[str, list[tuple[float, float]]]:
    """Run RUNS_PER_PERIOD outages of each kind in one world with probe period ``period_s``."""
    knobs = WorldKnobs(
        probe_period_s=period_s,
        toleration_s=0,
        failback_delay_s=period_s * FAILURE_THRESHOLD + 1,  # API: above the detection window
        start_traffic=False,
    )
    runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in OUTAGE_KINDS}
    async with running_world(
        management=management,
        clouds=clouds,
        documents=bench_documents(),
        namespace="default",
        knobs=knobs,
        workdir=WORKDIR / f"period-{period_s}",
    ) as world:
        api = await management.async_api_client()
        try:
            reader = HTTPRouteWeights(api=api, namespace=world.namespace, name=world.route_name)
            await back_on_primary(world, reader)
            for kind in OUTAGE_KINDS:
                for _ in range(RUNS_PER_PERIOD):
                    await asyncio.sleep(period_s * 2)  # probes settle healthy before the outage
                    runs[kind].append(await one_outage(world, reader, kind=kind))
                    await back_on_primary(world, reader)
        finally:
            await api.close()
    return runs


def rows_for(*, period_s: int, kind: str, runs: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Table rows (min/median/max) for one probe period, with the issue's goal beside them."""
    goal_first_s = period_s * FAILURE_THRESHOLD + 1
    rows = []
    for label, values in (
        ("onset -> first weight shift (s)", [r[0] for r in runs]),
        ("onset -> 99% on healthy (s)", [r[1] for r in runs]),
    ):
        stats = spread(values)
        rows.append(
            {
                "system": f"crossfade, probe {period_s} s x {FAILURE_THRESHOLD}, {kind}",
                "metric": label,
                "n": len(values),
                "min_s": round(stats["min"], 2),
                "median_s": round(stats["median"], 2),
                "max_s": round(stats["max"], 2),
                "goal_s": goal_first_s if "first" in label else "",
            }
        )
    return rows


def main() -> int:
    """Measure every probe period, then write bench/results/recovery.{json,md}."""
    rows: list[dict[str, Any]] = []
    raw: dict[str, list[tuple[float, float]]] = {}
    with running_sandbox(workdir=WORKDIR / "sandbox") as sandbox:
        clouds = {"aws": sandbox.clusters["aws"], "gcp": sandbox.clusters["gcp"]}
        for period_s in PROBE_PERIODS_S:
            runs = asyncio.run(
                measure_period(management=sandbox.management, clouds=clouds, period_s=period_s)
            )
            for kind, kind_runs in runs.items():
                raw[f"{period_s}s/{kind}"] = kind_runs
                rows.extend(rows_for(period_s=period_s, kind=kind, runs=kind_runs))
    for anchor in ANCHORS:
        rows.append(
            {
                "system": f"{anchor['system']} (published, {anchor['basis']})",
                "metric": "worst-case detection + switch (s)",
                "n": "",
                "min_s": "",
                "median_s": "",
                "max_s": anchor["worst_s"],
                "goal_s": "",
            }
        )
    path = write_results("recovery", rows=rows, extra={"raw_runs_s": raw})
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
