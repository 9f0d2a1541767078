"""Shared helpers for benchmarks: machine facts, spread statistics, JSON + markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Describe the machine and toolchain a result was measured on."""
    try:
        go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
        go_version = go.stdout.strip()
    except FileNotFoundError:
        go_version = "absent"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "go": go_version,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Return min / median / p99 / max / mean of a sample."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "n": float(len(ordered)),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def write_results(
    name: str,
    *,
    rows: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    notes: str | None = None,
) -> Path:
    """Write bench/results/NAME.json and NAME.md (a table of ``rows``, then ``notes``).

    ``notes`` is markdown appended below the table (more tables, sources, caveats).
    Returns the md path.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "rows": list(rows), **(extra or {})}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    columns = list(rows[0].keys()) if rows else []
    lines = [
        f"# {name}",
        "",
        f"Measured {payload['machine']['date']} on "
        f"{payload['machine']['cpus']} CPUs, Python {payload['machine']['python']}.",
        "",
    ]
    if columns:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    if notes:
        lines += ["", notes.strip()]
    md = RESULTS_DIR / f"{name}.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render ``rows`` (same keys each) as a markdown table."""
    if not rows:
        return ""
    columns = list(rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
