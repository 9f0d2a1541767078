"""A restarted operator resumes from the persisted engine state and never scales backwards.

The kill trials (tests/faults/test_operator_kill.py) caught a restarted operator sending
the standby its warm size again mid-failover: the state annotation lost when the standby
was last needed, so the first pass after the restart saw it idle "forever" and shrank it
at once, and the next pass grew it back when the outage was detected.
"""

from __future__ import annotations

import json

from crossfade.handlers.reconcile import STATE_ANNOTATION, PoolRuntime, load_state

from .test_reconcile import Harness


def restart(h: Harness) -> None:
    """A new operator process: the same object (annotations + status), no memory."""
    h.runtime = PoolRuntime(
        observers=list(h.runtime.observers),
        providers=dict(h.runtime.providers),
        routers=[h.router],
    )


async def settle_until(h: Harness, weights: dict[str, int], *, passes: int = 40) -> None:
    for _ in range(passes):
        await h.step()
        if h.weights == weights:
            return
    raise AssertionError(f"weights {h.weights}, expected {weights}")


async def fail_over_and_back(h: Harness) -> None:
    """One full outage: aws fails, gke takes the traffic, aws recovers, traffic returns."""
    await h.run(5)
    h.aws.healthy = False
    await settle_until(h, {"aws": 0, "gke": 100})
    h.aws.healthy = True
    await settle_until(h, {"aws": 100, "gke": 0})
    assert h.gke_group.desired == 2, "gke stays grown for a while after the failback"


async def test_restart_at_the_start_of_the_next_outage_does_not_shrink_the_standby() -> None:
    h = Harness()
    await fail_over_and_back(h)
    mark = len(h.gke_group.changes)
    h.aws.healthy = False  # the next outage begins ...
    await h.step()
    restart(h)  # ... and the operator is killed before it detected it
    await settle_until(h, {"aws": 0, "gke": 100})
    assert h.gke_group.changes[mark:] == [], "no setSize after the restart: gke holds 2 already"


async def test_restart_after_a_failback_keeps_the_scale_down_delay() -> None:
    h = Harness()
    await fail_over_and_back(h)
    restart(h)
    await h.run(10)
    assert h.gke_group.desired == 2, h.gke_group.changes


async def test_release_time_persists_once_and_then_steady_state_writes_nothing() -> None:
    h = Harness()
    await fail_over_and_back(h)
    await h.run(3)
    stored = load_state(h.body["metadata"]["annotations"])
    assert stored is not None
    gke = stored.placements["gke"]
    assert gke.last_needed_at is not None, "when gke stopped being needed is durable"
    assert stored.placements["aws"].last_needed_at is None, "a needed placement's is not"
    writes = h.annotation_writes
    raw = h.body["metadata"]["annotations"][STATE_ANNOTATION]
    await h.run(10)
    assert h.annotation_writes == writes
    assert json.loads(raw) == json.loads(h.body["metadata"]["annotations"][STATE_ANNOTATION])
