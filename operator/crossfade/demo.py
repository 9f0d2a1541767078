"""``crossfade demo`` / ``make demo``: a one-command outage drill on a local sandbox.

Starts real apiservers (crossfade.sandbox), then the world (crossfade.testing.world: moto
for AWS, the GKE test server, simulated Nodes, fake inference servers, the operator process
and client traffic), applies examples/quickstart.yaml, breaks the primary (endpoint 5xx and
its Nodes NotReady), recovers it and waits for failback, showing live progress. Ends with
a timeline, the detection-to-shift time, the failed-request share and a PNG plot in
demo-out/. Every process stops on exit or Ctrl-C. With ``--non-interactive`` (or when stdin
is not a terminal) progress is printed line by line instead of a live view.

Nothing here moves traffic itself: the weights shown are read from the HTTPRoute, which
only the operator writes. When the operator does not act, the report says so and why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live

from crossfade.demo_report import (
    MARK_FAULT,
    MARK_RECOVER,
    DrillReport,
    Sample,
    TimelineRow,
    build_report,
    derive_timeline,
    is_png,
    live_view,
    recent_success_rate,
    summary_table,
    timeline_table,
    write_plot,
    write_report_files,
)
from crossfade.sandbox import Sandbox, running_sandbox
from crossfade.testing.controlplane import REPO_ROOT, TestCluster
from crossfade.testing.world import World, WorldKnobs, load_documents, running_world

OUT_DIR = REPO_ROOT / "demo-out"
PLOT_NAME = "demo.png"
POLL_S = 0.25
VIEW_REFRESH_PER_S = 4
STEADY_SUCCESS_RATE = 0.95
EXIT_OK = 0
EXIT_DRILL_INCOMPLETE = 1
EXIT_INTERRUPTED = 130
LAST_WARNINGS = 3


@dataclass(frozen=True)
class DrillTimings:
    """How long each phase of the drill may take (seconds)."""

    steady_timeout_s: float = 60.0
    baseline_s: float = 6.0
    shift_timeout_s: float = 60.0
    outage_hold_s: float = 4.0
    failback_extra_s: float = 45.0  # on top of the pool's failbackDelaySeconds
    settle_s: float = 3.0


def _weight(sample: Sample, placement: str) -> float:
    found = sample.placement(placement)
    return (found.weight_percent or 0.0) if found else 0.0


async def wait_until(
    world: World, test: Callable[[Sample], bool], *, timeout_s: float
) -> Sample | None:
    """Wait until a sample taken from now on passes ``test``; return it, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    seen = len(world.samples)
    while time.monotonic() < deadline:
        fresh = world.samples[seen:]
        seen = len(world.samples)
        for sample in fresh:
            if test(sample):
                return sample
        await asyncio.sleep(POLL_S)
    return None


def _operator_warnings(world: World) -> str:
    warnings = [e for e in world.events if e.type == "Warning"]
    latest: dict[str, str] = {}
    for event in warnings:
        latest[event.reason] = event.message
    items = list(latest.items())[-LAST_WARNINGS:]
    return "; ".join(f"{reason}: {message}" for reason, message in items) or "none"


async def run_drill(
    world: World, *, timings: DrillTimings, say: Callable[[str], None]
) -> DrillReport:
    """Steady state, break the primary, wait for the shift, recover, wait for failback."""
    primary, standby = world.primary, world.standbys[0]
    notes: list[str] = []
    if world.operator is not None and world.operator.problem:
        notes.append(f"operator not running: {world.operator.problem.splitlines()[0]}")
    elif world.operator is None:
        notes.append("operator not started (knob start_operator=False)")

    def steady(sample: Sample) -> bool:
        return (
            _weight(sample, primary) >= 99.5
            and recent_success_rate(world.samples) >= STEADY_SUCCESS_RATE
        )

    say("waiting for steady traffic on the primary")
    if await wait_until(world, steady, timeout_s=timings.steady_timeout_s) is None:
        notes.append(f"no steady state within {timings.steady_timeout_s:.0f} s")
    await asyncio.sleep(timings.baseline_s)

    world.mark(MARK_FAULT, f"break {primary}: endpoint answers 503, its Nodes go NotReady")
    world.break_placement(primary)
    shifted = await wait_until(
        world, lambda s: _weight(s, primary) <= 0.5, timeout_s=timings.shift_timeout_s
    )
    if shifted is None:
        notes.append(
            f"the operator did not move traffic off {primary} within "
            f"{timings.shift_timeout_s:.0f} s; its latest warnings: {_operator_warnings(world)}"
        )
    await asyncio.sleep(timings.outage_hold_s)

    world.mark(MARK_RECOVER, f"recover {primary}: endpoint healthy, Nodes Ready")
    world.heal_placement(primary)
    if shifted is not None:
        failback_delay_s = float(
            (world.pool["spec"].get("failover") or {}).get("failbackDelaySeconds", 600)
        )
        timeout_s = failback_delay_s + timings.failback_extra_s
        say(f"waiting for failback (failbackDelaySeconds {failback_delay_s:.0f})")
        back = await wait_until(world, lambda s: _weight(s, primary) >= 99.5, timeout_s=timeout_s)
        if back is None:
            notes.append(f"no failback to {primary} within {timeout_s:.0f} s")
    await asyncio.sleep(timings.settle_s)
    return build_report(
        samples=world.samples, marks=world.marks, primary=primary, standby=standby, notes=notes
    )


async def _show_live(world: World, console: Console, stop: asyncio.Event) -> None:
    start = time.time()

    def render() -> RenderableType:
        rows = derive_timeline(samples=world.samples, marks=world.marks, events=world.events)
        return live_view(
            samples=world.samples, rows=rows, start=start, headline="crossfade outage drill"
        )

    with Live(render(), console=console, refresh_per_second=VIEW_REFRESH_PER_S) as live:
        while not stop.is_set():
            live.update(render())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0 / VIEW_REFRESH_PER_S)


async def _print_lines(world: World, console: Console, stop: asyncio.Event) -> None:
    start = time.time()
    printed: set[tuple[float, str, str]] = set()
    while True:
        rows = derive_timeline(samples=world.samples, marks=world.marks, events=world.events)
        for row in rows:
            key = (row.at, row.source, row.text)
            if key not in printed:
                printed.add(key)
                console.print(f"t+{row.at - start:5.1f}s  {row.source:<8} {row.text}")
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced."""

    report: DrillReport
    timeline: Sequence[TimelineRow]
    plot: Path
    files: Mapping[str, Path]

    @property
    def complete(self) -> bool:
        return self.report.shift_happened and self.report.failback_happened and is_png(self.plot)


async def run_demo(
    *,
    management: TestCluster,
    clouds: Mapping[str, TestCluster],
    namespace: str = "default",
    out_dir: Path = OUT_DIR,
    interactive: bool = False,
    timings: DrillTimings | None = None,
    knobs: WorldKnobs | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run the drill on running clusters and write the report files to ``out_dir``."""
    console = console or Console()
    timings = timings or DrillTimings()
    console.print("starting the world: moto, GKE test server, nodes, model servers, operator")
    async with running_world(
        management=management,
        clouds=clouds,
        documents=load_documents(),
        namespace=namespace,
        knobs=knobs or WorldKnobs(),
        workdir=out_dir / "world",
    ) as world:
        if world.operator is not None and world.operator.problem:
            console.print(f"[red]operator problem:[/] {world.operator.problem}")
        stop_view = asyncio.Event()
        view = _show_live if interactive else _print_lines
        viewer = asyncio.create_task(view(world, console, stop_view))
        try:
            report = await run_drill(world, timings=timings, say=console.print)
        finally:
            stop_view.set()
            await viewer
        samples, marks, events = list(world.samples), list(world.marks), list(world.events)
    rows = derive_timeline(samples=samples, marks=marks, events=events)
    plot = await asyncio.to_thread(
        write_plot,
        samples=samples,
        marks=marks,
        path=out_dir / PLOT_NAME,
        title="crossfade outage drill",
    )
    files = await asyncio.to_thread(
        write_report_files, report=report, rows=rows, samples=samples, out_dir=out_dir
    )
    return DemoResult(report=report, timeline=rows, plot=plot, files=files)


def print_result(result: DemoResult, console: Console) -> None:
    """Print the timeline, the summary and where the files are."""
    console.print(timeline_table(result.timeline, start=result.report.started_at))
    console.print(summary_table(result.report))
    for note in result.report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"plot:   {result.plot}")
    for kind, path in result.files.items():
        console.print(f"{kind + ':':<7} {path}")


async def _drill_in_sandbox(
    sandbox: Sandbox, *, interactive: bool, out_dir: Path, console: Console
) -> DemoResult:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM cancels like Ctrl-C does, so the world cleans up
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_demo(
        management=sandbox.management,
        clouds={"aws": sandbox.clusters["aws"], "gcp": sandbox.clusters["gcp"]},
        out_dir=out_dir,
        interactive=interactive,
        console=console,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return a process exit code (1 when the drill did not complete)."""
    parser = argparse.ArgumentParser(prog="crossfade demo", description=__doc__)
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="print progress line by line (default when stdin is not a terminal)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where to write the report")
    args = parser.parse_args(argv)
    interactive = sys.stdin.isatty() and not args.non_interactive
    console = Console()
    started = time.monotonic()
    # Outside the event loop SIGTERM unwinds like Ctrl-C: the sandbox stops its processes.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        console.print("starting the sandbox: etcd + 3 kube-apiservers (management, aws, gcp)")
        with running_sandbox() as sandbox:
            console.print(f"sandbox up in {time.monotonic() - started:.1f} s")
            try:
                result = asyncio.run(
                    _drill_in_sandbox(
                        sandbox, interactive=interactive, out_dir=args.out, console=console
                    )
                )
            finally:
                signal.signal(signal.SIGTERM, _interrupt)  # the loop reset it on close
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("interrupted: every process stopped")
        return EXIT_INTERRUPTED
    print_result(result, console)
    console.print(f"demo finished in {time.monotonic() - started:.0f} s; every process stopped")
    return EXIT_OK if result.complete else EXIT_DRILL_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
