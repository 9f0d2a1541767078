"""`crossfade simulate SCENARIO.yaml [--plot out.png]`: replay a scenario, print its timeline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from crossfade.engine.simulate import (
    ExpectationResult,
    Row,
    ScenarioError,
    SimulationResult,
    check_expectations,
    scenario_from_mapping,
    simulate,
)

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_BAD_INPUT = 2
HEALTH_LETTER = {"Healthy": "H", "Unhealthy": "U", "Unknown": "?"}
HEALTH_LEVEL = {"Unhealthy": 0, "Unknown": 1, "Healthy": 2}


def load_result(path: Path) -> SimulationResult:
    """Parse, validate and replay one scenario file."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a YAML mapping")
    return simulate(scenario_from_mapping(data))


def _interesting(result: SimulationResult, *, every_s: int) -> list[Row]:
    rows: list[Row] = []
    previous: Row | None = None
    for row in result.rows:
        changed = previous is None or (
            row.weights != previous.weights
            or row.health != previous.health
            or row.fail_static != previous.fail_static
            or row.ready_accelerators != previous.ready_accelerators
        )
        periodic = every_s > 0 and row.t % every_s == 0
        if changed or row.notes or periodic or row is result.rows[-1]:
            rows.append(row)
        previous = row
    return rows


def render_table(result: SimulationResult, *, every_s: int = 0) -> str:
    """A fixed-width timeline: weights, ready accelerators and health per placement."""
    names = result.scenario.policy.names
    width = max(8, *(len(n) for n in names))
    header = ["t(s)".rjust(6)]
    header += [f"{n[:width]:>{width}}" for n in names]
    header += ["served", "static", "notes"]
    lines = [
        f"scenario {result.scenario.name}: {result.scenario.description}",
        "per placement: weight/ready accelerators/health (H healthy, U unhealthy, ? unknown)",
        "  ".join(header),
    ]
    for row in _interesting(result, every_s=every_s):
        cells = [f"{row.t:>6}"]
        for name in names:
            cell = (
                f"{row.weights.get(name, 0)}/{row.ready_accelerators.get(name, 0)}/"
                f"{HEALTH_LETTER.get(row.health.get(name, 'Unknown'), '?')}"
            )
            cells.append(f"{cell:>{width}}")
        cells.append(f"{row.served_percent:>5.0f}%")
        cells.append("yes   " if row.fail_static else "no    ")
        cells.append(", ".join(row.notes))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_summary(result: SimulationResult, checks: Sequence[ExpectationResult]) -> str:
    transitions = [m for m in result.moments if m.kind == "Transition"]
    lines = ["", "transitions:"]
    lines += [f"  t={m.t:>5}  {m.reason}: {m.message}" for m in transitions] or ["  none"]
    lost = result.served_request_seconds_lost()
    lines.append(f"unserved demand: {lost:.0f} demand-seconds over {result.scenario.duration_s} s")
    if checks:
        lines.append("expectations:")
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  {mark} {json.dumps(dict(check.expectation))}: {check.detail}")
    return "\n".join(lines)


def plot(result: SimulationResult, out: Path) -> None:
    """Draw weights, ready capacity and health per placement over time (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.scenario.policy.names
    times = [row.t for row in result.rows]
    figure, (weights_ax, capacity_ax, health_ax) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 7), constrained_layout=True
    )
    for name in names:
        weights_ax.step(
            times, [r.weights.get(name, 0) for r in result.rows], where="post", label=name
        )
        capacity_ax.step(
            times,
            [r.ready_accelerators.get(name, 0) for r in result.rows],
            where="post",
            label=name,
        )
        health_ax.step(
            times,
            [HEALTH_LEVEL.get(r.health.get(name, "Unknown"), 1) for r in result.rows],
            where="post",
            label=name,
        )
    for event in result.scenario.events:
        for axis in (weights_ax, capacity_ax, health_ax):
            axis.axvline(event.at, color="grey", linestyle=":", linewidth=0.8)
    weights_ax.set_ylabel("traffic weight")
    weights_ax.set_ylim(-5, 105)
    capacity_ax.set_ylabel("ready accelerators")
    health_ax.set_ylabel("health")
    health_ax.set_yticks([0, 1, 2], ["Unhealthy", "Unknown", "Healthy"])
    health_ax.set_xlabel("seconds since scenario start (dotted: scripted faults)")
    weights_ax.legend(loc="upper right")
    weights_ax.set_title(f"crossfade simulate: {result.scenario.name}")
    figure.savefig(out, dpi=100)
    plt.close(figure)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossfade simulate",
        description="Replay a scripted outage through the failover engine and print the timeline.",
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML (see examples/scenarios/)")
    parser.add_argument("--plot", type=Path, help="write a PNG of weights, capacity and health")
    parser.add_argument(
        "--every", type=int, default=0, help="also print a row every N seconds (default: changes)"
    )
    parser.add_argument("--json", type=Path, help="write the timeline rows as JSON")
    return parser


def main(argv: list[str], *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Entry point of `crossfade simulate`; 0 ok, 1 an expectation failed, 2 bad input."""
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        result = load_result(args.scenario)
    except (OSError, yaml.YAMLError, ScenarioError) as error:
        print(f"crossfade simulate: {error}", file=stderr)
        return EXIT_BAD_INPUT
    checks = check_expectations(result)
    print(render_table(result, every_s=args.every), file=stdout)
    print(render_summary(result, checks), file=stdout)
    if args.json is not None:
        args.json.write_text(json.dumps([_row_json(r) for r in result.rows], indent=1) + "\n")
    if args.plot is not None:
        plot(result, args.plot)
        print(f"plot written to {args.plot}", file=stdout)
    return EXIT_OK if all(c.ok for c in checks) else EXIT_EXPECTATION_FAILED


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "t": row.t,
        "weights": dict(row.weights),
        "readyAccelerators": dict(row.ready_accelerators),
        "desiredNodes": dict(row.desired_nodes),
        "health": dict(row.health),
        "servedPercent": row.served_percent,
        "failStatic": row.fail_static,
        "notes": list(row.notes),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
