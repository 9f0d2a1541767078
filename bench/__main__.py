"""Run every benchmark script in bench/ (``make bench``); ``python -m bench NAME...`` runs some.

The soak (``bench/soak.py``, an hour with 1000 pools by default) runs in a plain
``make bench`` only when ``BENCH_SOAK_MINUTES`` is set (``BENCH_SOAK_MINUTES=60 make bench``);
naming it (``python -m bench soak``) runs it with its own default of 60 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# Helpers, not benchmarks: shared code, the fleet fixture and the processes it starts.
SKIP = {"__init__", "__main__", "common", "fleet", "fleet_servers", "operator_with_task_count"}
OPT_IN = {"soak": "BENCH_SOAK_MINUTES"}  # run by default only when this variable is set


def main(argv: list[str]) -> int:
    names = argv or sorted(
        p.stem
        for p in BENCH_DIR.glob("*.py")
        if p.stem not in SKIP and (p.stem not in OPT_IN or OPT_IN[p.stem] in os.environ)
    )
    failures = []
    for name in names:
        started = time.monotonic()
        print(f"== bench/{name}.py", flush=True)
        result = subprocess.run([sys.executable, str(BENCH_DIR / f"{name}.py")], check=False)
        print(f"== bench/{name}.py exit {result.returncode} in {time.monotonic() - started:.1f} s")
        if result.returncode != 0:
            failures.append(name)
    if failures:
        print(f"failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
