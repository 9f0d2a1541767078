"""A pin keeps its placement's capacity when the engine plans a scale-down in the same pass.

Seen end to end (tests/e2e/test_resilience.py scenario 6): after a forced failover became a
pin, the engine, unaware of manual control, moved its own weights back to the preferred
placement and planned TrafficLeft for the pinned one in the same decision; its state already
held the smaller size, so the pinned placement's scale-down passed the manual filter.
"""

from __future__ import annotations

from crossfade.engine.plan import Action, ScalePlacement, SetWeights
from crossfade.engine.policy import policy_from_spec
from crossfade.engine.state import PlacementState, PoolState
from crossfade.handlers.manual import ManualControl
from crossfade.handlers.reconcile import apply_manual_control, desired_before_plan

from .fakes import fast_spec


def test_engine_scale_down_of_the_pinned_placement_is_dropped() -> None:
    policy = policy_from_spec(fast_spec())
    wanted = policy.placement("gke").nodes_for(policy.demand_accelerators)
    assert wanted >= 2, "the spec must need more than the warm-standby node on gke"
    plan: list[Action] = [
        SetWeights({"aws": 100, "gke": 0}, "Failback", "back to the preferred placement"),
        ScalePlacement("gke", 1, "TrafficLeft", "gke carries no traffic"),
    ]
    # What the engine's state holds after that plan: gke already at the planned 1 node.
    after_plan = {"aws": 1, "gke": 1}
    previous = PoolState(placements={"aws": PlacementState(), "gke": PlacementState()})
    previous.placements["aws"].desired = 1
    previous.placements["gke"].desired = wanted

    before = desired_before_plan(plan, desired=after_plan, previous=previous)
    assert before == {"aws": 1, "gke": wanted}
    for current in (after_plan, before):
        actions, hold = apply_manual_control(
            plan,
            control=ManualControl(pinned_to="gke"),
            policy=policy,
            current_weights={"aws": 0, "gke": 100},
            current_desired=current,
        )
        assert not hold
        sizes = [a.desired for a in actions if isinstance(a, ScalePlacement)]
        assert all(size >= wanted for size in sizes), actions
        assert not any(isinstance(a, SetWeights) for a in actions)
