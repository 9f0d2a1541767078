"""`crossfade simulate`: table, expectations and exit codes, JSON rows, and the PNG plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

import yaml

from crossfade.simulation_report import (
    EXIT_BAD_INPUT,
    EXIT_EXPECTATION_FAILED,
    EXIT_OK,
    main,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_prints_the_timeline_and_passes(tmp_path: Path) -> None:
    rows = tmp_path / "rows.json"
    code, out, _ = run([str(SCENARIOS / "primary-outage.yaml"), "--json", str(rows)])
    assert code == EXIT_OK
    assert "aws-primary" in out and "gke-standby" in out
    assert "Failover aws-primary->gke-standby" in out
    assert "t=  350  Failover:" in out
    assert "FAIL" not in out
    data = json.loads(rows.read_text())
    assert data[0]["t"] == 0
    assert all(sum(r["weights"].values()) == 100 for r in data)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "outage.png"
    code, out, _ = run([str(SCENARIOS / "stockout.yaml"), "--plot", str(target)])
    assert code == EXIT_OK
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert target.stat().st_size > 10_000
    assert f"plot written to {target}" in out


def test_failed_expectation_exits_one(tmp_path: Path) -> None:
    data = yaml.safe_load((SCENARIOS / "primary-outage.yaml").read_text())
    data["expect"] = [{"reason": "Failover", "at": 100, "within": 0}]
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out, _ = run([str(path)])
    assert code == EXIT_EXPECTATION_FAILED
    assert "FAIL" in out and "Failover first at 350" in out


def test_bad_input_exits_two_with_a_message(tmp_path: Path) -> None:
    code, _, err = run([str(tmp_path / "missing.yaml")])
    assert code == EXIT_BAD_INPUT and "missing.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: {placements: []}\n")
    code, _, err = run([str(bad)])
    assert code == EXIT_BAD_INPUT and "placements" in err
