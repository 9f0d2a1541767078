"""Run ``crossfade run`` unchanged, plus a thread that writes the live asyncio task count.

The operator exports no task gauge, and a leak of tasks is what the soak benchmark looks
for, so the fleet benchmarks start the operator through this wrapper:
``python -m bench.operator_with_task_count run ...`` (same arguments as ``crossfade``). Every
``BENCH_TASKS_PERIOD_S`` seconds (default 10) a daemon thread appends one JSON line
``{"t": epoch_s, "tasks": n}`` to the file named by ``BENCH_TASKS_FILE``. It counts the
not-done tasks in asyncio's registry of every task (the C and Python task types register
there); the thread only reads that weak set, so the operator's behaviour is unchanged.

Memory profile (``bench/memory_profile.py``): with ``BENCH_TRACEMALLOC_FILE`` set, tracemalloc
starts before the operator is imported (``BENCH_TRACEMALLOC_FRAMES`` frames per trace,
default 1) and every SIGUSR1 appends one JSON line to that file: the top
``BENCH_TRACEMALLOC_TOP`` (default 60) allocation sites by file:line and by file, the traced
total, VmRSS, the live object count by type from ``gc.get_objects()``, and the decoded
Kubernetes objects still alive (``api_objects``: dicts with apiVersion, kind and metadata,
by kind and by what holds them, with their deep size), and then what a full garbage
collection finds (``gc_collect``: unreachable objects, RSS before and after). A daemon
thread takes the snapshot, so the signal handler only sets an event.

Allocator report (untraced runs too): with ``BENCH_ALLOCATOR_FILE`` set, every SIGUSR2
appends one JSON line with VmRSS, the thread count, glibc's ``mallinfo2()`` (heap bytes in
use and free, mmapped bytes) and VmRSS after ``malloc_trim(0)``, which hands free heap pages
back to the kernel: the difference is memory glibc held but Python no longer used.
"""

from __future__ import annotations

import asyncio.tasks
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

READ_ATTEMPTS = 5


def live_task_count() -> int | None:
    """Not-done asyncio tasks of the process; None when the set kept changing under us."""
    # The weak set every task registers in; private, hence no stub.
    registry = asyncio.tasks._all_tasks  # type: ignore[attr-defined]
    for _ in range(READ_ATTEMPTS):
        try:
            return sum(1 for task in list(registry) if not task.done())
        except RuntimeError:  # "set changed size during iteration": read again
            time.sleep(0.01)
    return None


def sample_forever(path: str, period_s: float) -> None:
    while True:
        time.sleep(period_s)
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"t": time.time(), "tasks": live_task_count()}) + "\n")


def status_mib(field: str = "VmRSS") -> float:
    """A kB figure of ``/proc/self/status`` (VmRSS, RssAnon, RssFile, ...) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def vm_rss_mib() -> float:
    return status_mib("VmRSS")


HOLDER_SAMPLE = 40  # objects per kind whose holders are looked up (get_referrers is slow)


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and the dicts, lists and strings inside it (JSON-shaped data)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        size += sum(deep_size(item, seen) for item in obj)
    return size


def holder_of(obj: Any, ignore: set[int]) -> str:
    """Name what keeps ``obj`` alive: the first referrer that is not a bare container,
    looking through up to two dicts or lists (an instance's fields, a cache's values)."""
    path: list[str] = []
    current = obj
    for _ in range(3):
        referrers = [r for r in gc.get_referrers(current) if id(r) not in ignore]
        ignore.add(id(referrers))
        if not referrers:
            return "/".join([*path, "unreferenced"])
        holder = referrers[0]
        suspended = _suspended_in(referrers, current)
        if suspended is not None:
            return "/".join([*path, suspended])
        if isinstance(holder, dict) and "__name__" in holder and "__builtins__" in holder:
            return "/".join([*path, f"module {holder['__name__']}"])
        name = f"{type(holder).__module__}.{type(holder).__qualname__}"
        if not isinstance(holder, dict | list):
            return "/".join([*path, name])
        path.append(name)
        ignore.add(id(holder))
        current = holder
    return "/".join(path)


def _suspended_in(referrers: list[Any], obj: Any) -> str | None:
    """Name the suspended coroutine (and its local) or the closure that holds ``obj``."""
    for referrer in referrers:
        kind = type(referrer).__name__
        if kind == "coroutine" and referrer.cr_frame is not None:
            frame = referrer.cr_frame
        elif kind == "frame":
            frame = referrer
        elif kind == "cell":
            return "closure cell"
        else:
            continue
        names = [name for name, value in frame.f_locals.items() if value is obj]
        return f"{frame.f_code.co_qualname}:{frame.f_lineno} local {','.join(names) or '?'}"
    return None


def api_objects(objects: list[Any]) -> dict[str, Any]:
    """Decoded Kubernetes objects alive now: count and deep size by kind and by holder."""
    found = [
        o
        for o in objects
        if type(o) is dict and "metadata" in o and "kind" in o and "apiVersion" in o
    ]
    by_kind: dict[str, dict[str, float]] = {}
    holders: Counter[str] = Counter()
    ignore = {id(objects), id(found)}
    sampled: Counter[str] = Counter()
    for obj in found:
        kind = str(obj.get("kind"))
        entry = by_kind.setdefault(kind, {"count": 0, "kib": 0.0})
        entry["count"] += 1
        entry["kib"] += deep_size(obj) / 1024
        if sampled[kind] < HOLDER_SAMPLE:
            sampled[kind] += 1
            holders[f"{kind} <- {holder_of(obj, set(ignore))}"] += 1
    return {"by_kind": by_kind, "holders_sampled": dict(holders.most_common())}


def collect_garbage() -> dict[str, Any]:
    """Run a full collection now: how much cyclic garbage was waiting, and RSS around it."""
    counts_before = gc.get_count()
    rss_before = vm_rss_mib()
    unreachable = gc.collect()
    return {
        "counts_before": counts_before,
        "unreachable_objects": unreachable,
        "rss_mib_before": rss_before,
        "rss_mib_after": vm_rss_mib(),
        "collections_by_generation": [s["collections"] for s in gc.get_stats()],
    }


def memory_report(top: int) -> dict[str, Any]:
    """Allocation sites (tracemalloc) and live objects by type (gc) of this process."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )

    def sites(key: str) -> list[dict[str, Any]]:
        stats = snapshot.statistics(key)
        return [
            {
                "site": " -> ".join(str(frame) for frame in s.traceback),
                "kib": s.size / 1024,
                "count": s.count,
            }
            for s in stats[:top]
        ]

    objects = gc.get_objects()
    by_type = Counter(type(o).__qualname__ for o in objects)
    traced, traced_peak = tracemalloc.get_traced_memory()
    return {
        "t": time.time(),
        "rss_mib": vm_rss_mib(),
        "traced_mib": traced / 2**20,
        "traced_peak_mib": traced_peak / 2**20,
        "by_line": sites("lineno"),
        "by_file": sites("filename"),
        "by_traceback": sites("traceback"),
        "objects_by_type": dict(by_type.most_common(top)),
        "api_objects": api_objects(objects),
        "gc_collect": collect_garbage(),
    }


def dump_on_signal(path: str, wanted: threading.Event, top: int) -> None:
    while True:
        wanted.wait()
        wanted.clear()
        report = memory_report(top)
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(report) + "\n")


def start_memory_profile(path: str) -> None:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    top = int(os.environ.get("BENCH_TRACEMALLOC_TOP", "60"))
    wanted = threading.Event()
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: wanted.set())
    threading.Thread(target=dump_on_signal, args=(path, wanted, top), daemon=True).start()


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later), every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def allocator_report() -> dict[str, Any]:
    """RSS, threads and glibc heap figures now, and RSS after giving free pages back."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    mib = {
        name: getattr(info, name) / 2**20 for name in ("arena", "hblkhd", "uordblks", "fordblks")
    }
    rss_before = vm_rss_mib()
    libc.malloc_trim(0)
    return {
        "t": time.time(),
        "rss_mib": rss_before,
        "rss_anon_mib": status_mib("RssAnon"),
        "rss_file_mib": status_mib("RssFile"),
        "python_allocated_blocks": sys.getallocatedblocks(),
        "threads": threading.active_count(),
        "heap_mib": mib["arena"],
        "heap_in_use_mib": mib["uordblks"],
        "heap_free_mib": mib["fordblks"],
        "mmapped_mib": mib["hblkhd"],
        "rss_mib_after_malloc_trim": vm_rss_mib(),
    }


def report_allocator_on_signal(path: str) -> None:
    wanted = threading.Event()
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: wanted.set())

    def loop() -> None:
        while True:
            wanted.wait()
            wanted.clear()
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(allocator_report()) + "\n")

    threading.Thread(target=loop, daemon=True).start()


def main() -> int:
    allocator_path = os.environ.get("BENCH_ALLOCATOR_FILE")
    if allocator_path:
        report_allocator_on_signal(allocator_path)
    profile_path = os.environ.get("BENCH_TRACEMALLOC_FILE")
    if profile_path:
        start_memory_profile(profile_path)
    # Imported here so that tracemalloc, when asked for, sees the operator's imports too.
    from crossfade.cli import main as crossfade_main

    path = os.environ.get("BENCH_TASKS_FILE")
    if path:
        period_s = float(os.environ.get("BENCH_TASKS_PERIOD_S", "10"))
        threading.Thread(target=sample_forever, args=(path, period_s), daemon=True).start()
    return crossfade_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
