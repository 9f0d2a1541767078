"""Run every benchmark script in bench/ (``make bench``); ``python -m bench NAME...`` runs some."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SKIP = {"__init__", "__main__", "common"}


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem not in SKIP)
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
