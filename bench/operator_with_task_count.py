"""Run ``crossfade run`` unchanged, plus a thread that writes the live asyncio task count.

The operator exports no task gauge, and a leak of tasks is what the soak benchmark looks
for, so the fleet benchmarks start the operator through this wrapper:
``python -m bench.operator_with_task_count run ...`` (same arguments as ``crossfade``). Every
``BENCH_TASKS_PERIOD_S`` seconds (default 10) a daemon thread appends one JSON line
``{"t": epoch_s, "tasks": n}`` to the file named by ``BENCH_TASKS_FILE``. It counts the
not-done tasks in asyncio's registry of every task (the C and Python task types register
there); the thread only reads that weak set, so the operator's behaviour is unchanged.
"""

from __future__ import annotations

import asyncio.tasks
import json
import os
import sys
import threading
import time

from crossfade.cli import main as crossfade_main

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


def main() -> int:
    path = os.environ.get("BENCH_TASKS_FILE")
    if path:
        period_s = float(os.environ.get("BENCH_TASKS_PERIOD_S", "10"))
        threading.Thread(target=sample_forever, args=(path, period_s), daemon=True).start()
    return crossfade_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
