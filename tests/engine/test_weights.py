"""Weights: apportioning, stepping and validation keep the sum and never go negative."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossfade.engine.weights import (
    WEIGHT_TOTAL,
    WeightError,
    all_to,
    apportion,
    distance,
    step_toward,
    validate,
)

NAMES = ["a", "b", "c", "d"]


def test_total_is_one_hundred() -> None:
    assert WEIGHT_TOTAL == 100


def test_apportion_largest_remainder_ties_follow_order() -> None:
    assert apportion({"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert apportion({"a": 1, "b": 1, "c": 1}, order=["c", "b", "a"]) == {"c": 34, "b": 33, "a": 33}


def test_apportion_proportional() -> None:
    assert apportion({"a": 12.0, "b": 4.0}) == {"a": 75, "b": 25}


def test_apportion_rejects_all_zero() -> None:
    with pytest.raises(WeightError):
        apportion({"a": 0.0, "b": 0.0})


def test_validate() -> None:
    validate({"a": 60, "b": 40})
    with pytest.raises(WeightError):
        validate({"a": 60, "b": 30})
    with pytest.raises(WeightError):
        validate({"a": 110, "b": -10})


def test_step_toward_moves_at_most_step() -> None:
    assert step_toward({"a": 100, "b": 0}, {"a": 0, "b": 100}, step_percent=25) == {
        "a": 75,
        "b": 25,
    }
    assert step_toward({"a": 100, "b": 0}, {"a": 0, "b": 100}, step_percent=100) == {
        "a": 0,
        "b": 100,
    }


def test_all_to_and_distance() -> None:
    assert all_to("b", ["a", "b"]) == {"a": 0, "b": 100}
    assert distance({"a": 100, "b": 0}, {"a": 25, "b": 75}) == 75


weightings = (
    st.lists(st.integers(0, 50), min_size=4, max_size=4)
    .filter(any)
    .map(lambda xs: apportion(dict(zip(NAMES, map(float, xs), strict=True)), order=NAMES))
)


@settings(max_examples=200)
@given(current=weightings, target=weightings, step=st.integers(1, 100))
def test_step_keeps_sum_and_converges(
    current: dict[str, int], target: dict[str, int], step: int
) -> None:
    moved = current
    for _ in range(200):
        nxt = step_toward(moved, target, step_percent=step)
        assert sum(nxt.values()) == WEIGHT_TOTAL
        assert all(w >= 0 for w in nxt.values())
        assert distance(moved, nxt) <= step
        # Never moves away from the target.
        assert distance(nxt, target) <= distance(moved, target)
        moved = nxt
        if moved == target:
            break
    assert moved == target


@settings(max_examples=200)
@given(shares=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=6).filter(any))
def test_apportion_sums_and_is_close(shares: list[float]) -> None:
    named = {f"p{i}": s for i, s in enumerate(shares)}
    weights = apportion(named)
    assert sum(weights.values()) == WEIGHT_TOTAL
    total = sum(shares)
    for name, share in named.items():
        assert abs(weights[name] - share * WEIGHT_TOTAL / total) < 1.0 + 1e-9
