"""`crossfade drill`: preflight refusals, dry run, shift + hold + resume, budget rollback."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import pytest

from crossfade import cli
from crossfade.handlers import manual
from crossfade.handlers.drill import DrillOutcome, DrillRequest, DrillRunner

from .fakes import apply_merge_patch


class PoolWithOperator:
    """A pool object plus a minimal stand-in for the operator's reaction to annotations."""

    def __init__(self, *, gke_health: str = "Healthy", gke_ready: int = 1) -> None:
        self.clock = [0.0]
        self.patches: list[dict[str, str | None]] = []
        self.gke_health_script: list[str] = []
        self.pool: dict[str, Any] = {
            "metadata": {"name": "chat", "annotations": {}},
            "spec": {"placements": [{"name": "aws"}, {"name": "gke"}]},
            "status": {
                "placements": [
                    {"name": "aws", "health": "Healthy", "readyNodes": 2, "weight": 100},
                    {"name": "gke", "health": gke_health, "readyNodes": gke_ready, "weight": 0},
                ]
            },
        }

    def _gke(self) -> dict[str, Any]:
        placements: list[dict[str, Any]] = self.pool["status"]["placements"]
        return placements[1]

    def read(self) -> Mapping[str, Any]:
        annotations = self.pool["metadata"]["annotations"]
        if annotations.get(manual.FORCE_FAILOVER) == "gke":
            self._gke()["weight"], self.pool["status"]["placements"][0]["weight"] = 100, 0
            annotations.pop(manual.FORCE_FAILOVER)
            annotations[manual.PIN] = "gke"
        if self.gke_health_script:
            self._gke()["health"] = self.gke_health_script.pop(0)
        return self.pool

    def annotate(self, patch: Mapping[str, str | None]) -> None:
        self.patches.append(dict(patch))
        meta = self.pool["metadata"]
        meta["annotations"] = apply_merge_patch(meta["annotations"], patch)

    def sleep(self, seconds: float) -> None:
        self.clock[0] += seconds

    def runner(self) -> DrillRunner:
        return DrillRunner(
            read_pool=self.read,
            annotate=self.annotate,
            clock=lambda: self.clock[0],
            sleep=self.sleep,
        )


@pytest.mark.parametrize(
    ("world", "target", "expected"),
    [
        (PoolWithOperator(gke_health="Unhealthy"), "gke", "not Healthy"),
        (PoolWithOperator(gke_ready=0), "gke", "no ready capacity"),
        (PoolWithOperator(), "azure", "not a placement"),
    ],
)
def test_drill_refuses_an_unfit_target_and_changes_nothing(
    world: PoolWithOperator, target: str, expected: str
) -> None:
    report = world.runner().run(DrillRequest(target=target, duration_s=60))
    assert report.outcome is DrillOutcome.REFUSED
    assert any(expected in line for line in report.lines), report.lines
    assert world.patches == []


def test_drill_refuses_while_manual_control_is_in_force() -> None:
    world = PoolWithOperator()
    world.pool["metadata"]["annotations"][manual.PIN] = "aws"
    report = world.runner().run(DrillRequest(target="gke", duration_s=60))
    assert report.outcome is DrillOutcome.REFUSED
    assert world.patches == []


def test_dry_run_prints_the_steps_and_changes_nothing() -> None:
    world = PoolWithOperator()
    report = world.runner().run(DrillRequest(target="gke", duration_s=600, dry_run=True))
    assert report.outcome is DrillOutcome.DRY_RUN and report.succeeded
    assert any(manual.FORCE_FAILOVER in line for line in report.lines)
    assert any("600 s" in line for line in report.lines)
    assert world.patches == []


def test_drill_forces_with_marker_holds_then_resumes() -> None:
    world = PoolWithOperator()
    report = world.runner().run(DrillRequest(target="gke", duration_s=30, drill_id="d-7"))
    assert report.outcome is DrillOutcome.COMPLETED, report.lines
    assert world.patches[0] == {manual.FORCE_FAILOVER: "gke", manual.DRILL: "d-7"}
    assert world.patches[-1][manual.RESUME] == "d-7"
    assert world.clock[0] >= 30, "held for the whole duration"
    assert report.shift_s is not None


def test_burnt_error_budget_aborts_and_rolls_back_early() -> None:
    world = PoolWithOperator()
    # Read 1 lands the shift; then the target degrades during the hold.
    world.gke_health_script = ["Healthy", "Healthy", "Unhealthy", "Unhealthy", "Unhealthy"]
    report = world.runner().run(DrillRequest(target="gke", duration_s=600, error_budget_polls=2))
    assert report.outcome is DrillOutcome.ABORTED, report.lines
    assert not report.succeeded
    assert world.clock[0] < 600, "rolled back before the planned end"
    assert world.patches[-1] == {
        manual.FORCE_FAILOVER: None,
        manual.PIN: None,
        manual.RESUME: report_id(world),
    }


def report_id(world: PoolWithOperator) -> str | None:
    return world.patches[0][manual.DRILL]


def test_shift_timeout_still_resumes() -> None:
    world = PoolWithOperator()
    world.read = lambda: world.pool  # type: ignore[method-assign]  # an operator that never acts
    report = world.runner().run(DrillRequest(target="gke", duration_s=60, shift_timeout_s=5))
    assert report.outcome is DrillOutcome.SHIFT_TIMED_OUT
    assert world.patches[-1][manual.FORCE_FAILOVER] is None
    assert manual.RESUME in world.patches[-1]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert cli.parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1m", "ten"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_duration_s(text)


def test_drill_options_are_parsed() -> None:
    args = cli.build_parser().parse_args(
        ["drill", "chat", "--to", "gke", "--duration", "2m", "--dry-run"]
    )
    assert (args.to, args.duration, args.dry_run) == ("gke", 120.0, True)


def test_interrupted_drill_still_resumes() -> None:
    world = PoolWithOperator()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    runner = DrillRunner(
        read_pool=world.read, annotate=world.annotate, clock=lambda: 0.0, sleep=interrupted
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run(DrillRequest(target="gke", duration_s=60))
    assert manual.RESUME in world.patches[-1]
