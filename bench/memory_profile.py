"""Where the operator's memory goes: RSS and allocation sites at two fleet sizes.

For each pool count in ``BENCH_MEMORY_POOLS`` (default "50,250") a fresh sandbox and fleet
(``bench/fleet.py``, the same fixture as ``bench/scale.py``) is built, the operator runs until
every pool's status is current, settles ``BENCH_MEMORY_SETTLE_S`` (default 60 s), and then
VmRSS is sampled every 5 s for ``BENCH_MEMORY_STEADY_S`` (default 30 s). With
``BENCH_MEMORY_TRACE=1`` (default) the operator runs with tracemalloc on (through
``bench/operator_with_task_count.py``) and, at the end of the window, dumps its top allocation
sites and live objects by type; tracing inflates RSS and slows the process, so RSS figures to
publish come from a run with ``BENCH_MEMORY_TRACE=0``.

Output: ``<BENCH_WORKDIR>/memory-profile.json`` with each run, and printed on stdout the RSS
per pool between the smallest and largest count and, with tracing, the allocation sites and
object types that grew most between them (per pool), which is what a per-pool leak or copy
looks like. Results for ``bench/results/memory.md`` are copied from there by hand, with the
commit they were measured at.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from bench.fleet import process_sample, running_fleet
from crossfade.sandbox import running_sandbox

POOL_COUNTS = tuple(int(n) for n in os.environ.get("BENCH_MEMORY_POOLS", "50,250").split(","))
SETTLE_S = float(os.environ.get("BENCH_MEMORY_SETTLE_S", "60"))
STEADY_S = float(os.environ.get("BENCH_MEMORY_STEADY_S", "30"))
TRACE = os.environ.get("BENCH_MEMORY_TRACE", "1") == "1"
WORKDIR = Path(os.environ.get("BENCH_WORKDIR", "/tmp/crossfade-bench-memory"))
SAMPLE_S = 5.0
# Taking the snapshot holds the GIL against a busy event loop: minutes at 250 pools.
DUMP_WAIT_S = float(os.environ.get("BENCH_MEMORY_DUMP_WAIT_S", "900"))
SHOWN = 25


def dump_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


async def wait_for_dump(path: Path, lines_before: int) -> dict[str, Any]:
    deadline = time.monotonic() + DUMP_WAIT_S
    while time.monotonic() < deadline:
        lines = await asyncio.to_thread(dump_lines, path)
        if len(lines) > lines_before:
            parsed: dict[str, Any] = json.loads(lines[-1])
            return parsed
        await asyncio.sleep(1.0)
    raise TimeoutError(f"the operator wrote no memory report to {path}")


async def one_setting(*, management: Any, clouds: Any, pools: int) -> dict[str, Any]:
    workdir = WORKDIR / f"pools-{pools}"
    dump = workdir / "tracemalloc.jsonl"
    allocator = workdir / "allocator.jsonl"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(dump.unlink, missing_ok=True)
    await asyncio.to_thread(allocator.unlink, missing_ok=True)
    os.environ["BENCH_ALLOCATOR_FILE"] = str(allocator)
    if TRACE:
        os.environ["BENCH_TRACEMALLOC_FILE"] = str(dump)
    else:
        os.environ.pop("BENCH_TRACEMALLOC_FILE", None)
    async with running_fleet(
        management=management, clouds=clouds, pools=pools, workdir=workdir
    ) as fleet:
        reconciled_s = await fleet.wait_all_reconciled(timeout_s=max(600.0, pools * 1.5))
        print(f"  {pools} pools: all reconciled {reconciled_s:.1f} s after start", flush=True)
        await asyncio.sleep(SETTLE_S)
        samples = [process_sample(fleet.pid)]
        started = time.monotonic()
        while time.monotonic() - started < STEADY_S:
            await asyncio.sleep(SAMPLE_S)
            samples.append(process_sample(fleet.pid))
        result: dict[str, Any] = {
            "pools": pools,
            "traced": TRACE,
            "all_reconciled_s": reconciled_s,
            "rss_mib_median": statistics.median(s["rss_mib"] for s in samples),
            "peak_rss_mib": samples[-1]["peak_rss_mib"],
        }
        print(f"  {pools} pools: RSS median {result['rss_mib_median']:.1f} MiB", flush=True)
        os.kill(fleet.pid, signal.SIGUSR2)
        result["allocator"] = await wait_for_dump(allocator, 0)
        print(f"  {pools} pools: allocator {result['allocator']}", flush=True)
        if TRACE:
            os.kill(fleet.pid, signal.SIGUSR1)
            result["report"] = await wait_for_dump(dump, 0)
        return result


def growth(small: dict[str, Any], large: dict[str, Any], key: str, field: str) -> list[Any]:
    """Per-pool growth of each site / type between the two settings, largest first."""
    pools = large["pools"] - small["pools"]

    def table(run: dict[str, Any]) -> dict[str, float]:
        report = run["report"]
        if key == "objects_by_type":
            return {k: float(v) for k, v in report[key].items()}
        return {row["site"]: float(row[field]) for row in report[key]}

    before, after = table(small), table(large)
    rows = [(site, (after[site] - before.get(site, 0.0)) / pools) for site in after]
    return sorted(rows, key=lambda row: -row[1])[:SHOWN]


def main() -> int:
    runs = []
    for pools in POOL_COUNTS:
        with running_sandbox(workdir=WORKDIR / "sandbox") as sandbox:
            clouds = {"aws": sandbox.clusters["aws"], "gcp": sandbox.clusters["gcp"]}
            runs.append(
                asyncio.run(one_setting(management=sandbox.management, clouds=clouds, pools=pools))
            )
    (WORKDIR / "memory-profile.json").write_text(json.dumps(runs, indent=1))
    small, large = runs[0], runs[-1]
    if large["pools"] > small["pools"]:
        per_pool = (large["rss_mib_median"] - small["rss_mib_median"]) / (
            large["pools"] - small["pools"]
        )
        print(f"RSS per pool: {per_pool * 1024:.0f} KiB")
        if TRACE:
            print("traced KiB per pool by line:")
            for site, kib in growth(small, large, "by_line", "kib"):
                print(f"  {kib:8.1f}  {site}")
            print("traced KiB per pool by traceback (BENCH_TRACEMALLOC_FRAMES deep):")
            for site, kib in growth(small, large, "by_traceback", "kib"):
                print(f"  {kib:8.1f}  {site}")
            print("traced KiB per pool by file:")
            for site, kib in growth(small, large, "by_file", "kib"):
                print(f"  {kib:8.1f}  {site}")
            print("live objects per pool by type:")
            for name, count in growth(small, large, "objects_by_type", ""):
                print(f"  {count:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
