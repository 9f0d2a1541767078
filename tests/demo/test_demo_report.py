"""The drill report: figures derived from samples, timeline, PNG plot, rich and markdown views."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from rich.console import Console

from crossfade.demo_report import (
    MARK_FAULT,
    MARK_RECOVER,
    Mark,
    OperatorEvent,
    PlacementSample,
    Sample,
    build_report,
    derive_timeline,
    is_png,
    live_view,
    markdown_report,
    recent_success_rate,
    summary_table,
    write_plot,
    write_report_files,
)

T0 = 1_800_000_000.0
PRIMARY, STANDBY = "aws-primary", "gke-standby"


def sample(
    at_s: float,
    *,
    primary_weight: float | None,
    primary_health: str = "Healthy",
    requests: int = 10,
    failed: int = 0,
    ready: int = 3,
) -> Sample:
    standby_weight = None if primary_weight is None else 100.0 - primary_weight
    return Sample(
        at=T0 + at_s,
        placements=(
            PlacementSample(
                PRIMARY,
                health=primary_health,
                weight_percent=primary_weight,
                desired_nodes=3,
                ready_nodes=ready,
                ready_accelerators=4 * ready,
            ),
            PlacementSample(
                STANDBY,
                health="Healthy",
                weight_percent=standby_weight,
                desired_nodes=1,
                ready_nodes=1,
                ready_accelerators=4,
            ),
        ),
        requests=requests,
        failed=failed,
    )


def full_drill() -> tuple[list[Sample], list[Mark]]:
    """Fault at 10 s, detected at 12 s, half shifted at 14 s, all shifted at 15 s,
    recovered at 20 s, failback starts at 40 s and completes at 41 s."""
    samples = [sample(t, primary_weight=100) for t in range(0, 10)]
    samples += [sample(10, primary_weight=100, failed=10, ready=0)]
    samples += [sample(11, primary_weight=100, failed=10, ready=0)]
    samples += [
        sample(t, primary_weight=100, primary_health="Unhealthy", failed=10, ready=0)
        for t in (12, 13)
    ]
    samples += [sample(14, primary_weight=50, primary_health="Unhealthy", failed=5, ready=0)]
    samples += [
        sample(t, primary_weight=0, primary_health="Unhealthy", ready=0) for t in range(15, 20)
    ]
    samples += [sample(t, primary_weight=0) for t in range(20, 40)]
    samples += [sample(40, primary_weight=50), sample(41, primary_weight=100)]
    samples += [sample(t, primary_weight=100) for t in range(42, 45)]
    marks = [Mark(T0 + 10, MARK_FAULT, "break"), Mark(T0 + 20, MARK_RECOVER, "recover")]
    return samples, marks


def test_report_finds_detection_shift_and_failback() -> None:
    samples, marks = full_drill()
    report = build_report(samples=samples, marks=marks, primary=PRIMARY, standby=STANDBY)
    assert report.shift_happened and report.failback_happened
    assert report.detected_at == T0 + 12
    assert report.shift_started_at == T0 + 14
    assert report.shift_completed_at == T0 + 15
    assert report.detection_to_shift_s == pytest.approx(3.0)
    assert report.fault_to_shift_s == pytest.approx(5.0)
    assert report.failback_started_at == T0 + 40
    assert report.recovery_to_failback_s == pytest.approx(21.0)
    assert report.resolution_s == pytest.approx(1.0)
    assert report.requests == 10 * len(samples)
    assert report.failed_requests == 45
    # Fault (10 s) to shift (15 s): six samples of ten requests, 45 failed.
    assert (report.outage_requests, report.outage_failed_requests) == (60, 45)
    assert report.outage_failed_share == pytest.approx(0.75)


def test_report_without_a_shift_claims_no_failback() -> None:
    samples = [sample(t, primary_weight=100, failed=10 if t >= 10 else 0) for t in range(30)]
    marks = [Mark(T0 + 10, MARK_FAULT, "break"), Mark(T0 + 20, MARK_RECOVER, "recover")]
    report = build_report(
        samples=samples, marks=marks, primary=PRIMARY, standby=STANDBY, notes=["no shift"]
    )
    # Weights at 100 after recovery are no failback when traffic never left.
    assert not report.shift_happened and not report.failback_happened
    assert report.detection_to_shift_s is None and report.fault_to_shift_s is None
    assert report.failed_share == pytest.approx(200 / 300)
    assert report.to_dict()["notes"] == ["no shift"]


def test_unreadable_weights_are_not_a_shift() -> None:
    samples = [sample(0, primary_weight=100), sample(11, primary_weight=None)]
    marks = [Mark(T0 + 10, MARK_FAULT, "break")]
    report = build_report(samples=samples, marks=marks, primary=PRIMARY, standby=STANDBY)
    assert report.shift_completed_at is None


def test_timeline_merges_marks_events_and_changes_in_time_order() -> None:
    samples, marks = full_drill()
    events = [OperatorEvent(T0 + 12.5, "Warning", "ProbeFailures", "aws-primary unhealthy")]
    rows = derive_timeline(samples=samples, marks=marks, events=events)
    assert [r.at for r in rows] == sorted(r.at for r in rows)
    texts = [(r.source, r.text) for r in rows]
    assert ("drill", "break") in texts
    assert ("health", f"{PRIMARY} Healthy -> Unhealthy") in texts
    assert ("route", f"weights {PRIMARY} 50%, {STANDBY} 50%") in texts
    assert ("nodes", f"{PRIMARY} ready 3 -> 0 (desired 3)") in texts
    assert ("operator", "Warning ProbeFailures: aws-primary unhealthy") in texts
    # Steady samples add nothing: only changes become rows.
    assert sum(1 for source, _ in texts if source == "route") == 4


def test_plot_is_a_png_with_the_configured_size(tmp_path: Path) -> None:
    samples, marks = full_drill()
    path = write_plot(samples=samples, marks=marks, path=tmp_path / "out" / "demo.png")
    assert is_png(path)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (1000, 800)


def test_is_png_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "fake.png"
    other.write_bytes(b"GIF89a not a png")
    assert not is_png(other)
    assert not is_png(tmp_path / "missing.png")


def test_views_render_the_figures() -> None:
    samples, marks = full_drill()
    report = build_report(samples=samples, marks=marks, primary=PRIMARY, standby=STANDBY)
    rows = derive_timeline(samples=samples, marks=marks)
    console = Console(record=True, width=120)
    console.print(live_view(samples=samples[:15], rows=rows, start=T0, headline="drill"))
    console.print(summary_table(report))
    text = console.export_text()
    assert PRIMARY in text and STANDBY in text
    assert "client success (last 5 s): 10.0%" in text  # 45 of 50 failed in samples 10..14
    assert "detection to shift" in text and "3.0 s" in text
    markdown = markdown_report(report, rows)
    assert "| detection to shift | 3.0 s |" in markdown
    assert "| t+ 10.0s | drill | break |" in markdown


def test_recent_success_rate_without_traffic_is_one() -> None:
    assert recent_success_rate([]) == 1.0
    assert recent_success_rate([sample(0, primary_weight=100, requests=0)]) == 1.0


def test_report_files_round_trip(tmp_path: Path) -> None:
    samples, marks = full_drill()
    report = build_report(samples=samples, marks=marks, primary=PRIMARY, standby=STANDBY)
    rows = derive_timeline(samples=samples, marks=marks)
    files = write_report_files(report=report, rows=rows, samples=samples, out_dir=tmp_path)
    data = json.loads(files["json"].read_text())
    assert data["report"]["shift_happened"] is True
    assert data["report"]["detection_to_shift_s"] == pytest.approx(3.0)
    assert len(data["samples"]) == len(samples)
    assert data["timeline"][0]["source"] in {"drill", "route", "health", "nodes"}
    assert files["markdown"].read_text().startswith("# crossfade outage drill")
