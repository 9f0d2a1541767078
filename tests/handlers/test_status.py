"""Status building and diffing: conditions keep their transition time, patches are minimal."""

from __future__ import annotations

from crossfade.engine.plan import (
    ConditionStatus,
    ConditionType,
    RecordTransition,
    SetCondition,
)
from crossfade.handlers.status import (
    HISTORY_MAX_ENTRIES,
    merge_conditions,
    merge_history,
    merge_patch,
    phase_of,
    status_patch,
)

T0 = 1_800_000_000.0


def ready(status: ConditionStatus, reason: str) -> SetCondition:
    return SetCondition(ConditionType.READY, status, reason, f"because {reason}")


def test_transition_time_changes_only_with_status() -> None:
    first = merge_conditions(
        None, [ready(ConditionStatus.TRUE, "A")], now=T0, observed_generation=1
    )
    same = merge_conditions(
        first, [ready(ConditionStatus.TRUE, "B")], now=T0 + 60, observed_generation=1
    )
    flipped = merge_conditions(
        same, [ready(ConditionStatus.FALSE, "C")], now=T0 + 120, observed_generation=2
    )
    assert first[0]["lastTransitionTime"] == same[0]["lastTransitionTime"]
    assert same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] != same[0]["lastTransitionTime"]
    assert flipped[0]["observedGeneration"] == 2


def test_untouched_conditions_are_kept_in_order() -> None:
    start = merge_conditions(
        None,
        [
            ready(ConditionStatus.TRUE, "A"),
            SetCondition(ConditionType.DEGRADED, ConditionStatus.FALSE, "Fine", ""),
        ],
        now=T0,
        observed_generation=None,
    )
    after = merge_conditions(
        start, [ready(ConditionStatus.FALSE, "X")], now=T0, observed_generation=None
    )
    assert [c["type"] for c in after] == ["Ready", "Degraded"]
    assert after[1] == start[1]


def test_history_is_newest_first_and_bounded() -> None:
    transitions = [RecordTransition(T0 + i, "aws", "gke", "Failover", str(i)) for i in range(30)]
    history = merge_history(None, transitions)
    assert len(history) == HISTORY_MAX_ENTRIES
    assert history[0]["message"] == "29"
    assert history[0]["from"] == "aws" and history[0]["to"] == "gke"


def test_merge_patch_is_empty_when_equal_and_deletes_with_null() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1]}
    assert merge_patch(old, old) == {}
    assert merge_patch(old, {"a": 1, "b": {"c": 2}, "l": [1, 2]}) == {"b": {"d": None}, "l": [1, 2]}


def test_status_patch_keeps_foreign_keys() -> None:
    stored = {"activePlacement": "aws", "somebodyElse": {"x": 1}}
    assert status_patch(stored, {"activePlacement": "aws"}) == {}
    assert status_patch(stored, {"activePlacement": "gke"}) == {"activePlacement": "gke"}
    ours_dropped = {"activePlacement": "aws", "lastFailoverTime": "t"}
    assert status_patch(ours_dropped, {"activePlacement": "aws"}) == {"lastFailoverTime": None}


def test_phase_prefers_the_most_urgent_condition() -> None:
    conditions = [
        {"type": "Ready", "status": "True"},
        {"type": "FailStatic", "status": "True"},
        {"type": "Degraded", "status": "True"},
    ]
    assert phase_of(conditions) == "FailStatic"
    assert phase_of([{"type": "Ready", "status": "False"}]) == "Pending"
