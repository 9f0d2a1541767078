"""A reversible failover drill driven through the manual-control annotations.

`crossfade drill` checks the target (Healthy, ready capacity, no manual control in force),
forces the failover with a drill marker (the operator records it in status.history with
reason ``Drill``), watches the target's health while it carries all traffic, and resumes
automatic control at the end or as soon as the error budget is burnt.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crossfade.handlers.manual import DRILL, FORCE_FAILOVER, FREEZE, PIN, RESUME

DRILL_POLL_S = 1.0
DRILL_SHIFT_TIMEOUT_S = 300.0
# Polls in which the target may be seen not Healthy before the drill is rolled back.
DRILL_ERROR_BUDGET_POLLS = 2
HEALTHY = "Healthy"

ReadPool = Callable[[], Mapping[str, Any]]
Annotate = Callable[[Mapping[str, str | None]], None]


class DrillOutcome(enum.StrEnum):
    """How a drill ended."""

    REFUSED = "Refused"
    DRY_RUN = "DryRun"
    COMPLETED = "Completed"
    ABORTED = "Aborted"
    SHIFT_TIMED_OUT = "ShiftTimedOut"


@dataclass(frozen=True, slots=True)
class DrillRequest:
    """What the operator of the drill asked for."""

    target: str
    duration_s: float
    dry_run: bool = False
    shift_timeout_s: float = DRILL_SHIFT_TIMEOUT_S
    error_budget_polls: int = DRILL_ERROR_BUDGET_POLLS
    poll_s: float = DRILL_POLL_S
    drill_id: str = field(default_factory=lambda: f"drill-{uuid.uuid4().hex[:8]}")


@dataclass(slots=True)
class DrillReport:
    """What happened, for the CLI's output and exit code."""

    outcome: DrillOutcome
    lines: list[str] = field(default_factory=list)
    shift_s: float | None = None

    @property
    def succeeded(self) -> bool:
        """True when the drill did what was asked (a dry run counts)."""
        return self.outcome in (DrillOutcome.COMPLETED, DrillOutcome.DRY_RUN)


def placement_status(pool: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """Return status.placements[name], or None when the pool reports no such placement."""
    for item in (pool.get("status") or {}).get("placements") or ():
        if item.get("name") == name:
            return dict(item)
    return None


def preflight_problems(pool: Mapping[str, Any], target: str) -> list[str]:
    """Return why a drill to ``target`` must not start; empty when it may."""
    names = [p.get("name") for p in (pool.get("spec") or {}).get("placements") or ()]
    if target not in names:
        return [f"{target} is not a placement of this pool (known: {', '.join(map(str, names))})"]
    problems: list[str] = []
    annotations = (pool.get("metadata") or {}).get("annotations") or {}
    busy = [key for key in (FORCE_FAILOVER, PIN, DRILL) if annotations.get(key)]
    if str(annotations.get(FREEZE, "")).strip().lower() in ("true", "yes", "1", "on"):
        busy.append(FREEZE)
    if busy:
        problems.append(f"manual control already in force ({', '.join(busy)}); resume first")
    status = placement_status(pool, target)
    if status is None:
        return [*problems, f"the operator reports nothing about {target} yet"]
    if status.get("health") != HEALTHY:
        problems.append(f"{target} is {status.get('health', 'Unknown')}, not {HEALTHY}")
    if int(status.get("readyNodes") or 0) < 1:
        problems.append(f"{target} has no ready capacity (readyNodes=0)")
    return problems


def describe_plan(pool: Mapping[str, Any], request: DrillRequest) -> list[str]:
    """Return the steps the drill takes, as printed by --dry-run."""
    name = (pool.get("metadata") or {}).get("name", "?")
    return [
        f"would annotate {name}: {FORCE_FAILOVER}={request.target}, {DRILL}={request.drill_id}",
        f"would wait up to {request.shift_timeout_s:.0f} s for all traffic on {request.target}",
        f"would hold for {request.duration_s:.0f} s, rolling back when {request.target} is "
        f"not {HEALTHY} in {request.error_budget_polls} polls",
        f"would annotate {name}: {RESUME}={request.drill_id} (automatic control fails back)",
    ]


def burn_reason(pool: Mapping[str, Any], target: str) -> str | None:
    """Return why this poll spends error budget (target not Healthy), or None."""
    status = placement_status(pool, target)
    if status is None:
        return f"{target} vanished from status"
    if status.get("health") != HEALTHY:
        reason = status.get("reason") or "no reason given"
        return f"{target} is {status.get('health', 'Unknown')} ({reason})"
    return None


class DrillRunner:
    """Runs one drill; the pool is read and annotated through callables (tests fake them)."""

    def __init__(
        self,
        *,
        read_pool: ReadPool,
        annotate: Annotate,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._read = read_pool
        self._annotate = annotate
        self._clock = clock
        self._sleep = sleep
        self._say = say

    def _note(self, report: DrillReport, line: str) -> None:
        report.lines.append(line)
        self._say(line)

    def run(self, request: DrillRequest) -> DrillReport:
        """Check, force, hold, resume; always resumes once anything was changed."""
        pool = self._read()
        problems = preflight_problems(pool, request.target)
        if problems:
            report = DrillReport(DrillOutcome.REFUSED)
            for problem in problems:
                self._note(report, f"drill refused: {problem}")
            return report
        if request.dry_run:
            report = DrillReport(DrillOutcome.DRY_RUN)
            for line in describe_plan(pool, request):
                self._note(report, line)
            return report
        report = DrillReport(DrillOutcome.COMPLETED)
        self._annotate({FORCE_FAILOVER: request.target, DRILL: request.drill_id})
        self._note(report, f"drill {request.drill_id}: forced failover to {request.target}")
        try:
            self._shift_and_hold(request, report)
        finally:
            # Roll back whatever happened: clear the force (if not yet consumed) and resume.
            self._annotate({FORCE_FAILOVER: None, PIN: None, RESUME: request.drill_id})
            self._note(report, f"drill {request.drill_id}: resumed automatic control")
        return report

    def _shift_and_hold(self, request: DrillRequest, report: DrillReport) -> None:
        started = self._clock()
        while True:
            pool = self._read()
            status = placement_status(pool, request.target) or {}
            if int(status.get("weight") or 0) == 100:
                report.shift_s = self._clock() - started
                self._note(report, f"all traffic on {request.target} after {report.shift_s:.1f} s")
                break
            if self._clock() - started > request.shift_timeout_s:
                report.outcome = DrillOutcome.SHIFT_TIMED_OUT
                self._note(report, f"traffic not on {request.target} within the timeout")
                return
            self._sleep(request.poll_s)
        hold_started = self._clock()
        burnt = 0
        while self._clock() - hold_started < request.duration_s:
            self._sleep(request.poll_s)
            reason = burn_reason(self._read(), request.target)
            if reason is None:
                continue
            burnt += 1
            self._note(report, f"error budget {burnt}/{request.error_budget_polls}: {reason}")
            if burnt >= request.error_budget_polls:
                report.outcome = DrillOutcome.ABORTED
                self._note(report, "error budget burnt: rolling back")
                return
        self._note(report, f"held {request.duration_s:.0f} s on {request.target}")
