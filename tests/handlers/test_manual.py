"""Manual-control annotations: parsing, precedence and cleanup."""

from __future__ import annotations

import pytest

from crossfade.handlers.manual import (
    FORCE_FAILOVER,
    FREEZE,
    PIN,
    RESUME,
    ManualControlError,
    cleanup_patch,
    parse_manual_control,
)

PLACEMENTS = ("aws", "gke")


def test_no_annotations_is_automatic() -> None:
    control = parse_manual_control({}, placements=PLACEMENTS)
    assert not control.holds_traffic
    assert control.describe() == "automatic"


def test_pin_and_freeze_are_read() -> None:
    control = parse_manual_control({PIN: " gke ", FREEZE: "True"}, placements=PLACEMENTS)
    assert control.pinned_to == "gke"
    assert control.frozen
    assert control.describe() == "frozen, pinned to gke"


@pytest.mark.parametrize(
    "annotations",
    [{PIN: "azure"}, {FORCE_FAILOVER: ""}, {FREEZE: "maybe"}, {PIN: "aws", FORCE_FAILOVER: "gke"}],
)
def test_invalid_requests_raise(annotations: dict[str, str]) -> None:
    with pytest.raises(ManualControlError):
        parse_manual_control(annotations, placements=PLACEMENTS)


def test_resume_clears_pin_and_freeze() -> None:
    control = parse_manual_control({PIN: "gke", FREEZE: "true", RESUME: "x"}, placements=PLACEMENTS)
    assert control.resume and not control.frozen and control.pinned_to is None
    assert cleanup_patch(control, done_force=False) == {RESUME: None, PIN: None, FREEZE: None}


def test_force_failover_is_removed_only_once_done() -> None:
    control = parse_manual_control({FORCE_FAILOVER: "gke"}, placements=PLACEMENTS)
    assert cleanup_patch(control, done_force=False) == {}
    assert cleanup_patch(control, done_force=True) == {FORCE_FAILOVER: None}
