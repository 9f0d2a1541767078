"""Integer traffic weights per placement that always sum to WEIGHT_TOTAL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

WEIGHT_TOTAL = 100

Weights = dict[str, int]


class WeightError(ValueError):
    """Weights that break the invariants (negative, all zero, wrong sum)."""


def validate(weights: Mapping[str, int]) -> None:
    """Raise WeightError unless weights are non-negative, not all zero and sum to the total."""
    if any(w < 0 for w in weights.values()):
        raise WeightError(f"negative weight in {dict(weights)}")
    total = sum(weights.values())
    if total != WEIGHT_TOTAL:
        raise WeightError(f"weights {dict(weights)} sum to {total}, not {WEIGHT_TOTAL}")


def apportion(shares: Mapping[str, float], *, order: Iterable[str] | None = None) -> Weights:
    """Turn non-negative shares into integer weights summing to WEIGHT_TOTAL.

    Largest remainder method; ties go to the name earliest in ``order`` (default: sorted
    names), so the result is deterministic. Raises WeightError when every share is zero.
    """
    names = list(order) if order is not None else sorted(shares)
    if len(names) == 1 and shares.get(names[0], 0.0) > 0:
        return {names[0]: WEIGHT_TOTAL}  # the common case: one placement serves everything
    total = sum(max(0.0, shares.get(n, 0.0)) for n in names)
    if total <= 0:
        raise WeightError(f"cannot apportion traffic over all-zero shares {dict(shares)}")
    exact = {n: max(0.0, shares.get(n, 0.0)) * WEIGHT_TOTAL / total for n in names}
    result = {n: int(exact[n]) for n in names}
    left = WEIGHT_TOTAL - sum(result.values())
    rank = {n: i for i, n in enumerate(names)}
    by_remainder = sorted(names, key=lambda n: (-(exact[n] - result[n]), rank[n]))
    for name in by_remainder[:left]:
        result[name] += 1
    return result


def all_to(name: str, names: Iterable[str]) -> Weights:
    """Every unit of weight on one placement."""
    return {n: WEIGHT_TOTAL if n == name else 0 for n in names}


def step_toward(
    current: Mapping[str, int], target: Mapping[str, int], *, step_percent: int
) -> Weights:
    """Move from current toward target by at most ``step_percent`` units of total weight.

    Weight is taken from placements above their target (largest excess first) and given to
    placements below it (largest deficit first); the sum stays WEIGHT_TOTAL. A placement
    with target 0 that is the only one holding weight keeps what it cannot yet hand over.
    """
    names = sorted(set(current) | set(target))
    now = {n: current.get(n, 0) for n in names}
    goal = {n: target.get(n, 0) for n in names}
    budget = max(1, step_percent) * WEIGHT_TOTAL // 100
    deficits = sorted((n for n in names if goal[n] > now[n]), key=lambda n: (now[n] - goal[n], n))
    excesses = sorted((n for n in names if now[n] > goal[n]), key=lambda n: (goal[n] - now[n], n))
    moved = {n: now[n] for n in names}
    for receiver in deficits:
        need = min(goal[receiver] - moved[receiver], budget)
        for giver in excesses:
            if need <= 0:
                break
            spare = moved[giver] - goal[giver]
            take = min(spare, need)
            if take > 0:
                moved[giver] -= take
                moved[receiver] += take
                need -= take
                budget -= take
        if budget <= 0:
            break
    return moved


def distance(a: Mapping[str, int], b: Mapping[str, int]) -> int:
    """Units of weight that differ between two weightings (half the L1 distance)."""
    names = set(a) | set(b)
    return sum(abs(a.get(n, 0) - b.get(n, 0)) for n in names) // 2
