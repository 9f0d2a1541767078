"""Manual control of a pool through annotations: force failover, pin, freeze and resume.

Annotations (documented in docs/runbook.md):

- ``crossfade.dev/force-failover: <placement>``: move all traffic to that placement now,
  skipping the health thresholds (its capacity is scaled up first). One-shot: the operator
  removes the annotation once the failover has been carried out.
- ``crossfade.dev/pin: <placement>``: keep all traffic on that placement until unpinned;
  health changes are still observed and reported but do not move traffic.
- ``crossfade.dev/freeze: "true"``: change nothing (no scaling, no weight writes); keep
  observing, reporting and proposing. Any other value than true/false is invalid.
- ``crossfade.dev/resume: <anything>``: clear pin and freeze; one-shot, removed by the
  operator.
- ``crossfade.dev/drill: <drill id>``: marks a forced failover as a drill (set by
  ``crossfade drill`` next to force-failover); the operator records the landed failover in
  status.history with reason ``Drill`` and removes the marker on resume.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

PREFIX = "crossfade.dev/"
FORCE_FAILOVER = PREFIX + "force-failover"
PIN = PREFIX + "pin"
FREEZE = PREFIX + "freeze"
RESUME = PREFIX + "resume"
DRILL = PREFIX + "drill"
MANUAL_ANNOTATIONS = (FORCE_FAILOVER, PIN, FREEZE, RESUME, DRILL)
# One-shot requests the operator deletes after acting on them.
ONE_SHOT_ANNOTATIONS = (FORCE_FAILOVER, RESUME)

TRUE_VALUES = frozenset({"true", "yes", "1", "on"})
FALSE_VALUES = frozenset({"false", "no", "0", "off", ""})


class ManualControlError(ValueError):
    """An annotation asks for something invalid (unknown placement, bad boolean)."""

    reason = "InvalidManualControl"


@dataclass(frozen=True, slots=True)
class ManualControl:
    """What the annotations ask for, already checked against the pool's placements."""

    force_failover_to: str | None = None
    pinned_to: str | None = None
    frozen: bool = False
    resume: bool = False
    drill: str | None = None

    @property
    def holds_traffic(self) -> bool:
        """True when the engine's own traffic moves must not be carried out."""
        return self.frozen or self.pinned_to is not None

    def describe(self) -> str:
        """Return a short human summary for events and `crossfade status`."""
        parts = []
        if self.frozen:
            parts.append("frozen")
        if self.pinned_to:
            parts.append(f"pinned to {self.pinned_to}")
        if self.force_failover_to:
            parts.append(f"forced failover to {self.force_failover_to}")
        if self.drill:
            parts.append(f"drill {self.drill}")
        if self.resume:
            parts.append("resume requested")
        return ", ".join(parts) or "automatic"


def parse_manual_control(
    annotations: Mapping[str, str] | None, *, placements: Collection[str]
) -> ManualControl:
    """Read the manual-control annotations; raise ManualControlError when one is invalid.

    ``resume`` wins over ``pin`` and ``freeze`` set at the same time (the operator clears
    them), so an on-call engineer can always get back to automatic with one annotation.
    """
    annotations = annotations or {}
    known = set(placements)

    def placement_of(key: str) -> str | None:
        value = annotations.get(key)
        if value is None:
            return None
        name = value.strip()
        if name not in known:
            listed = ", ".join(sorted(known))
            raise ManualControlError(
                f"{key}={value!r} names no placement of this pool (known: {listed})"
            )
        return name

    resume = RESUME in annotations
    drill = (annotations.get(DRILL) or "").strip() or None
    force = placement_of(FORCE_FAILOVER)
    pin = placement_of(PIN)
    frozen = False
    raw_freeze = annotations.get(FREEZE)
    if raw_freeze is not None:
        value = raw_freeze.strip().lower()
        if value in TRUE_VALUES:
            frozen = True
        elif value not in FALSE_VALUES:
            raise ManualControlError(f"{FREEZE}={raw_freeze!r} is not a boolean (true/false)")
    if resume:
        return ManualControl(force_failover_to=force, resume=True, drill=drill)
    if pin is not None and force is not None and pin != force:
        raise ManualControlError(
            f"{PIN}={pin} and {FORCE_FAILOVER}={force} disagree; remove one of them"
        )
    return ManualControl(force_failover_to=force, pinned_to=pin, frozen=frozen, drill=drill)


def cleanup_patch(control: ManualControl, *, done_force: bool) -> dict[str, str | None]:
    """Return the metadata.annotations merge patch that removes satisfied one-shot requests."""
    patch: dict[str, str | None] = {}
    if control.resume:
        patch.update({RESUME: None, PIN: None, FREEZE: None})
        if control.drill is not None:
            patch[DRILL] = None
    if done_force and control.force_failover_to is not None:
        patch[FORCE_FAILOVER] = None
    return patch
