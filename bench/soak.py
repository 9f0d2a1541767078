"""Soak: 1000 InferencePools in ONE operator process for an hour, with periodic outages.

Fixture: ``bench/fleet.py`` (see its docstring). Every ``BENCH_SOAK_OUTAGE_EVERY_S``
(default 300 s) the primary endpoints of one server group (1/10 of the pools) answer 503 for
``BENCH_SOAK_OUTAGE_HOLD_S`` (default 120 s: 3 failed probes 10 s apart plus toleration 10 s,
so those pools fail over to their GKE standby, which scales up), then heal (failback after
60 s); the next outage takes the next group. Every 30 s the operator's RSS, CPU seconds, open
fds, sockets, threads and asyncio task count (``bench.operator_with_task_count``), the
management apiserver's write counters and the load average are sampled into
``samples.jsonl`` in the work directory (kept while the run goes, so a cut-short run still
has its data).

Figures: RSS growth from the first 5 minutes after warm-up to the last 5 minutes (goal
< 10%), least-squares slopes of RSS, tasks, fds and sockets after warm-up (per hour), writes
per minute. Knobs: ``BENCH_SOAK_MINUTES`` (default 60; ``make bench`` runs it only when set),
``BENCH_SOAK_POOLS`` (default 1000), ``BENCH_SOAK_WARMUP_MINUTES`` (default 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from bench.common import write_results
from bench.fleet import (
    MIN_AVAILABLE_MIB,
    SERVER_GROUPS,
    Fleet,
    apiserver_writes,
    available_mib,
    load_average,
    process_sample,
    running_fleet,
)
from crossfade.sandbox import running_sandbox

MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES", "60"))
POOLS = int(os.environ.get("BENCH_SOAK_POOLS", "1000"))
WARMUP_MINUTES = float(os.environ.get("BENCH_SOAK_WARMUP_MINUTES", "10"))
OUTAGE_EVERY_S = float(os.environ.get("BENCH_SOAK_OUTAGE_EVERY_S", "300"))
OUTAGE_HOLD_S = float(os.environ.get("BENCH_SOAK_OUTAGE_HOLD_S", "120"))
SAMPLE_S = 30.0
EDGE_WINDOW_S = 300.0
GROWTH_GOAL = 0.10
WORKDIR = Path(os.environ.get("BENCH_WORKDIR", "/tmp/crossfade-bench-soak"))


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) points, per hour; None under 3 points."""
    if len(points) < 3:
        return None
    fit = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    return fit.slope * 3600


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True when ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def outages(fleet: Fleet, stop: asyncio.Event, log: list[dict[str, Any]]) -> None:
    """Break one server group's primaries every OUTAGE_EVERY_S for OUTAGE_HOLD_S, rotating."""
    group = 0
    while not await stopped_within(stop, OUTAGE_EVERY_S - OUTAGE_HOLD_S):
        await asyncio.to_thread(fleet.break_group, group)
        log.append({"t": time.time(), "event": "break", "group": group})
        await stopped_within(stop, OUTAGE_HOLD_S)  # heal even when stopping
        await asyncio.to_thread(fleet.heal_group, group)
        log.append({"t": time.time(), "event": "heal", "group": group})
        group = (group + 1) % SERVER_GROUPS


async def sample(fleet: Fleet, started: float) -> dict[str, Any]:
    proc = process_sample(fleet.pid)
    writes = await asyncio.to_thread(apiserver_writes, fleet.management)
    tasks = [t for t in fleet.task_counts() if t["tasks"] is not None]
    return {
        **proc,
        "elapsed_s": proc["t"] - started,
        "tasks": tasks[-1]["tasks"] if tasks else None,
        "writes_total": sum(v for k, v in writes.items() if not k.endswith(" leases")),
        "writes_by_kind": dict(writes),
        "load1": load_average()[0],
        "operator_alive": fleet.operator.alive(),
    }


def summarise(samples: list[dict[str, Any]], outage_log: list[dict[str, Any]]) -> dict[str, Any]:
    warm = [s for s in samples if s["elapsed_s"] >= WARMUP_MINUTES * 60]
    if len(warm) < 2:
        warm = samples
    first_t, last_t = warm[0]["elapsed_s"], warm[-1]["elapsed_s"]
    head = [s["rss_mib"] for s in warm if s["elapsed_s"] <= first_t + EDGE_WINDOW_S]
    tail = [s["rss_mib"] for s in warm if s["elapsed_s"] >= last_t - EDGE_WINDOW_S]
    head_rss, tail_rss = statistics.median(head), statistics.median(tail)
    cpu_s = warm[-1]["cpu_s"] - warm[0]["cpu_s"]
    window = max(1.0, last_t - first_t)
    writes = warm[-1]["writes_total"] - warm[0]["writes_total"]

    def slope(key: str) -> float | None:
        return slope_per_hour([(s["elapsed_s"], float(s[key])) for s in warm if s[key] is not None])

    tasks = [s["tasks"] for s in warm if s["tasks"] is not None]
    return {
        "measured_minutes": round(samples[-1]["elapsed_s"] / 60, 1),
        "after_warmup_minutes": round(window / 60, 1),
        "outages": sum(1 for e in outage_log if e["event"] == "break"),
        "rss_after_warmup_mib": round(head_rss, 1),
        "rss_end_mib": round(tail_rss, 1),
        "rss_growth_percent": round(100 * (tail_rss - head_rss) / head_rss, 2),
        "rss_growth_goal_percent": 100 * GROWTH_GOAL,
        "peak_rss_mib": round(max(s["peak_rss_mib"] for s in samples), 1),
        "rss_slope_mib_per_h": _round(slope("rss_mib")),
        "tasks_min_max": f"{min(tasks)}-{max(tasks)}" if tasks else "",
        "tasks_slope_per_h": _round(slope("tasks")),
        "fds_min_max": f"{min(s['fds'] for s in warm):.0f}-{max(s['fds'] for s in warm):.0f}",
        "fds_slope_per_h": _round(slope("fds")),
        "sockets_slope_per_h": _round(slope("sockets")),
        "cpu_percent_one_core": round(100 * cpu_s / window, 1),
        "writes_per_min": round(60 * writes / window, 1),
        "load1_median": round(statistics.median(s["load1"] for s in samples), 2),
        "load1_max": round(max(s["load1"] for s in samples), 2),
        "operator_alive_at_end": samples[-1]["operator_alive"],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def run(management: Any, clouds: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    samples_path = WORKDIR / "samples.jsonl"
    await asyncio.to_thread(WORKDIR.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(samples_path.unlink, missing_ok=True)
    samples: list[dict[str, Any]] = []
    outage_log: list[dict[str, Any]] = []
    async with running_fleet(
        management=management, clouds=clouds, pools=POOLS, workdir=WORKDIR
    ) as fleet:
        started = time.time()
        stop = asyncio.Event()
        chaos = asyncio.create_task(outages(fleet, stop, outage_log))
        try:
            while time.time() - started < MINUTES * 60:
                entry = await sample(fleet, started)
                samples.append(entry)
                with samples_path.open("a") as out:
                    out.write(json.dumps(entry) + "\n")
                print(
                    f"{entry['elapsed_s'] / 60:5.1f} min rss {entry['rss_mib']:.0f} MiB "
                    f"tasks {entry['tasks']} fds {entry['fds']:.0f} load {entry['load1']:.2f}",
                    flush=True,
                )
                if not entry["operator_alive"]:
                    print(fleet.operator.log_tail())
                    break
                if available_mib() < MIN_AVAILABLE_MIB:
                    print(f"stopping early: {available_mib():.0f} MiB available", flush=True)
                    break
                await asyncio.sleep(SAMPLE_S)
        finally:
            stop.set()
            await chaos
    (WORKDIR / "outages.json").write_text(json.dumps(outage_log, indent=1))
    return samples, outage_log


def main() -> int:
    with running_sandbox(workdir=WORKDIR / "sandbox") as sandbox:
        clouds = {"aws": sandbox.clusters["aws"], "gcp": sandbox.clusters["gcp"]}
        samples, outage_log = asyncio.run(run(sandbox.management, clouds))
    summary = summarise(samples, outage_log)
    rows = [{"metric": key, "value": value} for key, value in summary.items()]
    md = write_results(
        "soak",
        rows=rows,
        extra={
            "pools": POOLS,
            "minutes_requested": MINUTES,
            "warmup_minutes": WARMUP_MINUTES,
            "outage_every_s": OUTAGE_EVERY_S,
            "outage_hold_s": OUTAGE_HOLD_S,
            "samples": samples,
            "outages": outage_log,
        },
    )
    print(md.read_text())
    return 0 if summary["operator_alive_at_end"] else 1


if __name__ == "__main__":
    sys.exit(main())
