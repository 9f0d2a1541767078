"""What the outage drill saw: samples, timeline, summary figures, PNG plot and rich views.

Pure apart from the file writers: the world (crossfade.testing.world) records ``Sample``\\ s,
``Mark``\\ s and operator ``OperatorEvent``\\ s; this module turns them into the report that
``crossfade demo`` prints and writes to ``demo-out/``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

FULL_WEIGHT_PERCENT = 100.0
# A weight within this of 0 or 100 counts as "all" / "none" (layer rounding).
WEIGHT_TOLERANCE_PERCENT = 0.5
PLOT_WIDTH_IN = 10.0
PLOT_HEIGHT_IN = 8.0
PLOT_DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECENT_WINDOW_S = 5.0
LIVE_TIMELINE_ROWS = 8

MARK_FAULT = "fault"
MARK_RECOVER = "recover"


@dataclass(frozen=True, slots=True)
class PlacementSample:
    """One placement at one instant, as the world saw it."""

    name: str
    health: str = "Unknown"  # from the pool's status (the operator's view)
    weight_percent: float | None = None  # from the HTTPRoute (what the gateway routes by)
    desired_nodes: int | None = None  # from the cloud double
    ready_nodes: int = 0  # from the Nodes in the cloud's apiserver
    ready_accelerators: int = 0
    endpoint_fault: str | None = None  # the fault injected into its inference server


@dataclass(frozen=True, slots=True)
class Sample:
    """Everything sampled at one instant; ``requests``/``failed`` count since the last one."""

    at: float
    placements: tuple[PlacementSample, ...]
    phase: str | None = None
    active_placement: str | None = None
    requests: int = 0
    failed: int = 0

    def placement(self, name: str) -> PlacementSample | None:
        return next((p for p in self.placements if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Mark:
    """Something the drill did (``kind`` is MARK_FAULT, MARK_RECOVER or free-form)."""

    at: float
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    """A Kubernetes Event the operator posted on the pool."""

    at: float
    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One line of the timeline: when, who (drill, operator, route, health, nodes), what."""

    at: float
    source: str
    text: str


@dataclass(frozen=True, slots=True)
class DrillReport:
    """The drill's summary figures; times are epoch seconds, durations seconds."""

    primary: str
    standby: str
    started_at: float
    fault_at: float | None
    recovered_at: float | None
    detected_at: float | None
    shift_started_at: float | None
    shift_completed_at: float | None
    failback_started_at: float | None
    failback_completed_at: float | None
    requests: int
    failed_requests: int
    outage_requests: int
    outage_failed_requests: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    resolution_s: float = 0.0  # median time between samples: the figures' precision

    @property
    def shift_happened(self) -> bool:
        return self.shift_completed_at is not None

    @property
    def failback_happened(self) -> bool:
        return self.failback_completed_at is not None

    @property
    def detection_to_shift_s(self) -> float | None:
        """From the operator marking the primary unhealthy to all traffic off it."""
        return _between(self.detected_at, self.shift_completed_at)

    @property
    def fault_to_shift_s(self) -> float | None:
        """From breaking the primary to all traffic off it (what clients suffer)."""
        return _between(self.fault_at, self.shift_completed_at)

    @property
    def recovery_to_failback_s(self) -> float | None:
        return _between(self.recovered_at, self.failback_completed_at)

    @property
    def failed_share(self) -> float:
        return self.failed_requests / self.requests if self.requests else 0.0

    @property
    def outage_failed_share(self) -> float:
        return self.outage_failed_requests / self.outage_requests if self.outage_requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        for name in (
            "shift_happened",
            "failback_happened",
            "detection_to_shift_s",
            "fault_to_shift_s",
            "recovery_to_failback_s",
            "failed_share",
            "outage_failed_share",
        ):
            data[name] = getattr(self, name)
        return data


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def _weight(sample: Sample, name: str) -> float | None:
    placement = sample.placement(name)
    return None if placement is None else placement.weight_percent


def _first(samples: Iterable[Sample], *, after: float | None, test: Any) -> float | None:
    if after is None:
        return None
    return next((s.at for s in samples if s.at >= after and test(s)), None)


def _mark_time(marks: Sequence[Mark], kind: str) -> float | None:
    return next((m.at for m in marks if m.kind == kind), None)


def build_report(
    *,
    samples: Sequence[Sample],
    marks: Sequence[Mark],
    primary: str,
    standby: str,
    notes: Sequence[str] = (),
) -> DrillReport:
    """Derive the drill's figures from what was sampled (weights from the route itself)."""
    ordered = sorted(samples, key=lambda s: s.at)
    fault_at = _mark_time(marks, MARK_FAULT)
    recovered_at = _mark_time(marks, MARK_RECOVER)

    def primary_weight(s: Sample) -> float:
        return _weight(s, primary) or 0.0

    def off_primary(s: Sample) -> bool:
        return _weight(s, primary) is not None and primary_weight(s) <= WEIGHT_TOLERANCE_PERCENT

    def on_primary(s: Sample) -> bool:
        return primary_weight(s) >= FULL_WEIGHT_PERCENT - WEIGHT_TOLERANCE_PERCENT

    def primary_unhealthy(s: Sample) -> bool:
        placement = s.placement(primary)
        return placement is not None and placement.health not in ("Healthy", "Unknown")

    detected_at = _first(ordered, after=fault_at, test=primary_unhealthy)
    shift_started_at = _first(
        ordered, after=fault_at, test=lambda s: primary_weight(s) < FULL_WEIGHT_PERCENT - 0.5
    )
    shift_completed_at = _first(ordered, after=fault_at, test=off_primary)
    failback_started_at = _first(
        ordered,
        after=recovered_at if shift_completed_at is not None else None,
        test=lambda s: primary_weight(s) > WEIGHT_TOLERANCE_PERCENT,
    )
    failback_completed_at = _first(ordered, after=failback_started_at, test=on_primary)
    outage_end = shift_completed_at or recovered_at or float("inf")
    outage = [s for s in ordered if fault_at is not None and fault_at <= s.at <= outage_end]
    return DrillReport(
        primary=primary,
        standby=standby,
        started_at=ordered[0].at if ordered else 0.0,
        fault_at=fault_at,
        recovered_at=recovered_at,
        detected_at=detected_at,
        shift_started_at=shift_started_at,
        shift_completed_at=shift_completed_at,
        failback_started_at=failback_started_at,
        failback_completed_at=failback_completed_at,
        requests=sum(s.requests for s in ordered),
        failed_requests=sum(s.failed for s in ordered),
        outage_requests=sum(s.requests for s in outage),
        outage_failed_requests=sum(s.failed for s in outage),
        notes=tuple(notes),
        resolution_s=_median_interval(ordered),
    )


def _median_interval(ordered: Sequence[Sample]) -> float:
    gaps = sorted(b.at - a.at for a, b in itertools.pairwise(ordered))
    return gaps[len(gaps) // 2] if gaps else 0.0


def _fmt_weight(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def derive_timeline(
    *,
    samples: Sequence[Sample],
    marks: Sequence[Mark] = (),
    events: Sequence[OperatorEvent] = (),
) -> list[TimelineRow]:
    """Merge drill marks, operator Events and every change seen in the samples, by time."""
    rows = [TimelineRow(m.at, "drill", m.text) for m in marks]
    rows += [TimelineRow(e.at, "operator", f"{e.type} {e.reason}: {e.message}") for e in events]
    previous: Sample | None = None
    for sample in sorted(samples, key=lambda s: s.at):
        if previous is None:
            previous = sample
            continue
        weights_now = {p.name: p.weight_percent for p in sample.placements}
        weights_before = {p.name: p.weight_percent for p in previous.placements}
        if weights_now != weights_before and all(v is not None for v in weights_now.values()):
            text = ", ".join(f"{n} {_fmt_weight(w)}" for n, w in weights_now.items())
            rows.append(TimelineRow(sample.at, "route", f"weights {text}"))
        for placement in sample.placements:
            before = previous.placement(placement.name)
            if before is None:
                continue
            if placement.health != before.health:
                rows.append(
                    TimelineRow(
                        sample.at,
                        "health",
                        f"{placement.name} {before.health} -> {placement.health}",
                    )
                )
            if placement.ready_nodes != before.ready_nodes:
                desired = "?" if placement.desired_nodes is None else placement.desired_nodes
                rows.append(
                    TimelineRow(
                        sample.at,
                        "nodes",
                        f"{placement.name} ready {before.ready_nodes} -> "
                        f"{placement.ready_nodes} (desired {desired})",
                    )
                )
        if sample.phase != previous.phase and sample.phase is not None:
            rows.append(TimelineRow(sample.at, "pool", f"phase {previous.phase} -> {sample.phase}"))
        previous = sample
    return sorted(rows, key=lambda r: r.at)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _relative(at: float | None, start: float) -> str:
    return "-" if at is None else f"t+{max(0.0, at - start):5.1f}s"


def timeline_table(rows: Sequence[TimelineRow], *, start: float) -> Table:
    """The timeline as a rich table (times relative to ``start``)."""
    table = Table(title="Timeline", show_lines=False, expand=False)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("what")
    for row in rows:
        table.add_row(_relative(row.at, start), row.source, row.text)
    return table


def summary_table(report: DrillReport) -> Table:
    """The headline figures as a rich table."""
    table = Table(title="Outage drill summary", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    start = report.started_at
    yes_no = {True: "[green]yes[/]", False: "[red]no[/]"}
    table.add_row("traffic shifted off the primary", yes_no[report.shift_happened])
    table.add_row("traffic failed back", yes_no[report.failback_happened])
    table.add_row("primary broken at", _relative(report.fault_at, start))
    table.add_row("operator marked it unhealthy at", _relative(report.detected_at, start))
    table.add_row("all traffic off the primary at", _relative(report.shift_completed_at, start))
    table.add_row("detection to shift", _seconds(report.detection_to_shift_s))
    table.add_row("  (sampling resolution)", _seconds(report.resolution_s))
    table.add_row("fault to shift (client view)", _seconds(report.fault_to_shift_s))
    table.add_row("recovery to failback", _seconds(report.recovery_to_failback_s))
    table.add_row(
        "failed client requests (whole drill)",
        f"{report.failed_requests}/{report.requests} = {report.failed_share:.1%}",
    )
    table.add_row(
        "failed client requests (fault to shift)",
        f"{report.outage_failed_requests}/{report.outage_requests} "
        f"= {report.outage_failed_share:.1%}",
    )
    return table


def recent_success_rate(samples: Sequence[Sample], *, window_s: float = RECENT_WINDOW_S) -> float:
    """Client success rate over the last ``window_s`` of samples (1.0 with no traffic)."""
    if not samples:
        return 1.0
    cutoff = samples[-1].at - window_s
    recent = [s for s in samples if s.at > cutoff]
    requests = sum(s.requests for s in recent)
    return 1.0 - sum(s.failed for s in recent) / requests if requests else 1.0


def live_view(
    *,
    samples: Sequence[Sample],
    rows: Sequence[TimelineRow],
    start: float,
    headline: str,
) -> RenderableType:
    """The live terminal view: placements, client success rate and the latest timeline rows."""
    table = Table(title=headline, expand=False)
    for column in ("placement", "health", "nodes ready/desired", "accelerators", "weight", "fault"):
        table.add_column(column)
    latest = samples[-1] if samples else None
    for placement in latest.placements if latest else ():
        health_style = {"Healthy": "green", "Unknown": "yellow"}.get(placement.health, "red")
        desired = "?" if placement.desired_nodes is None else str(placement.desired_nodes)
        table.add_row(
            placement.name,
            Text(placement.health, style=health_style),
            f"{placement.ready_nodes}/{desired}",
            str(placement.ready_accelerators),
            _fmt_weight(placement.weight_percent),
            placement.endpoint_fault or "",
        )
    rate = recent_success_rate(samples)
    rate_style = "green" if rate >= 0.99 else ("yellow" if rate >= 0.9 else "red")
    phase = latest.phase if latest and latest.phase else "?"
    status = Text.assemble(
        ("client success (last 5 s): ", ""),
        (f"{rate:.1%}", rate_style),
        (f"   pool phase: {phase}", ""),
    )
    return Group(table, status, timeline_table(rows[-LIVE_TIMELINE_ROWS:], start=start))


def write_plot(
    *, samples: Sequence[Sample], marks: Sequence[Mark], path: Path, title: str = "crossfade"
) -> Path:
    """Write weights, ready capacity and client errors over time to a PNG; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(samples, key=lambda s: s.at)
    start = ordered[0].at if ordered else 0.0
    times = [s.at - start for s in ordered]
    names = [p.name for p in ordered[0].placements] if ordered else []
    figure, (weights_ax, capacity_ax, errors_ax) = plt.subplots(
        3, 1, sharex=True, figsize=(PLOT_WIDTH_IN, PLOT_HEIGHT_IN)
    )
    for name in names:
        weights = [_weight(s, name) for s in ordered]
        weights_ax.step(times, [w if w is not None else float("nan") for w in weights], label=name)
        capacity = [
            (s.placement(name) or PlacementSample(name)).ready_accelerators for s in ordered
        ]
        capacity_ax.step(times, capacity, label=name)
    error_rate = [100.0 * s.failed / s.requests if s.requests else 0.0 for s in ordered]
    errors_ax.fill_between(times, error_rate, step="pre", color="tab:red", alpha=0.6)
    weights_ax.set_ylabel("route weight (%)")
    weights_ax.set_ylim(-5, 105)
    capacity_ax.set_ylabel("ready accelerators")
    errors_ax.set_ylabel("failed requests (%)")
    errors_ax.set_ylim(0, 105)
    errors_ax.set_xlabel("seconds since start")
    for ax in (weights_ax, capacity_ax, errors_ax):
        ax.grid(alpha=0.3)
        for mark in marks:
            ax.axvline(mark.at - start, color="grey", linestyle="--", linewidth=1)
    for mark in marks:
        weights_ax.annotate(
            mark.kind, (mark.at - start, 102), fontsize=8, color="grey", annotation_clip=False
        )
    if names:
        weights_ax.legend(loc="center right")
        capacity_ax.legend(loc="center right")
    weights_ax.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=PLOT_DPI)
    plt.close(figure)
    return path


def is_png(path: Path) -> bool:
    """Return whether ``path`` starts with the PNG signature and an IHDR chunk."""
    head = path.read_bytes()[:16] if path.exists() else b""
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"


def markdown_report(report: DrillReport, rows: Sequence[TimelineRow]) -> str:
    """The report as markdown: summary figures, then the timeline table."""
    start = report.started_at
    lines = [
        "# crossfade outage drill",
        "",
        "| figure | value |",
        "|---|---|",
        f"| traffic shifted off {report.primary} | {'yes' if report.shift_happened else 'no'} |",
        f"| traffic failed back | {'yes' if report.failback_happened else 'no'} |",
        f"| detection to shift | {_seconds(report.detection_to_shift_s)} |",
        f"| fault to shift (client view) | {_seconds(report.fault_to_shift_s)} |",
        f"| recovery to failback | {_seconds(report.recovery_to_failback_s)} |",
        f"| sampling resolution | {_seconds(report.resolution_s)} |",
        f"| failed client requests | {report.failed_requests}/{report.requests} "
        f"({report.failed_share:.1%}) |",
        f"| failed between fault and shift | {report.outage_failed_requests}/"
        f"{report.outage_requests} ({report.outage_failed_share:.1%}) |",
        "",
    ]
    if report.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in report.notes], ""]
    lines += ["## Timeline", "", "| time | source | what |", "|---:|---|---|"]
    lines += [
        f"| {_relative(r.at, start)} | {r.source} | {r.text.replace('|', '/')} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_report_files(
    *,
    report: DrillReport,
    rows: Sequence[TimelineRow],
    samples: Sequence[Sample],
    out_dir: Path,
) -> Mapping[str, Path]:
    """Write report.json (figures, timeline, samples) and report.md; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    payload = {
        "report": report.to_dict(),
        "timeline": [asdict(row) for row in rows],
        "samples": [asdict(sample) for sample in samples],
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown_report(report, rows))
    return {"json": json_path, "markdown": md_path}
