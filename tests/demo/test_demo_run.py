"""The demo, non-interactive, on the real apiservers with the operator process: its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from crossfade.demo import DrillTimings, print_result, run_demo
from crossfade.demo_report import is_png
from crossfade.testing.controlplane import TestCluster

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

QUICK_DRILL = DrillTimings(
    steady_timeout_s=60.0,
    baseline_s=3.0,
    shift_timeout_s=60.0,
    outage_hold_s=3.0,
    failback_extra_s=45.0,
    settle_s=2.0,
)


async def test_demo_shifts_away_and_fails_back(
    demo_crds: TestCluster,
    cloud_clusters: dict[str, TestCluster],
    namespace: str,
    tmp_path: Path,
) -> None:
    console = Console(record=True, width=140, force_terminal=False)
    result = await run_demo(
        management=demo_crds,
        clouds=cloud_clusters,
        namespace=namespace,
        out_dir=tmp_path,
        interactive=False,
        timings=QUICK_DRILL,
        console=console,
    )
    print_result(result, console)
    report = result.report
    assert report.fault_at is not None and report.recovered_at is not None
    assert report.shift_happened, report.notes
    assert report.failback_happened, report.notes
    assert report.detected_at is not None and report.detection_to_shift_s is not None
    assert report.fault_at < report.shift_completed_at < report.recovered_at  # type: ignore[operator]
    # Clients saw failures only around the outage, far from all requests.
    assert 0 < report.failed_requests < report.requests
    assert is_png(result.plot) and result.plot == tmp_path / "demo.png"
    written = json.loads(result.files["json"].read_text())
    assert written["report"]["shift_happened"] and written["report"]["failback_happened"]
    # The pool's own conditions told the same story while traffic was on the standby.
    assert "FailedOver" in {sample["phase"] for sample in written["samples"]}
    assert "traffic shifted off the primary" in console.export_text()
