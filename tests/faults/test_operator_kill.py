"""SIGKILL the operator at seeded random points of failovers and failbacks; it must converge.

One world serves every trial: the pool alternates between failing over to GKE and failing
back to AWS, and each trial kills the leader at a random moment after the outage (or the
recovery) begins. The successor restarts under the same identity, as the kubelet restarts
a crashed container in the same pod, so it holds the Lease at once and the trials measure
the operator, not the lease expiry.

Per trial: the route reaches the direction's target, the status agrees with the route, the
clouds hold the sizes the engine planned, no scale request repeats a size already asked for
(or held), a failover never shrinks its receiver, and no node group or pool is left over.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field

import pytest
from kubernetes import client

from crossfade.testing.inference_server import Behaviour
from tests.e2e.world import GROUP, PLURAL, POOL_NAME, VERSION, World, eventually
from tests.faults.support import (
    AWS_ALL,
    GKE_ALL,
    clouds_match_plan,
    gke_set_sizes,
    operator_log_problems,
    orphaned_capacity,
    restart_in_place,
    status_matches_route,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(540)]

SEED = 20261126
TRIALS = 30
KILL_WINDOW_S = 4.0
CONVERGE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 45.0


@dataclass
class Trial:
    """One kill: which direction was under way, when the kill landed, what followed."""

    index: int
    direction: str
    kill_after_s: float
    weights_at_kill: dict[str, int]
    gke_size_before: int
    set_sizes: list[int] = field(default_factory=list)
    converge_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def scale_request_problems(trial: Trial) -> list[str]:
    """Requests for a size the pool already had or was already asked for, and shrinks of
    the receiver during a failover."""
    problems = []
    held = trial.gke_size_before
    for size in trial.set_sizes:
        if size == held:
            problems.append(f"setSize={size} repeats the size already held or asked for")
        if trial.direction == "failover" and size < held:
            problems.append(f"setSize={size} shrinks the failover receiver from {held}")
        held = size
    return problems


def loosen_failover_budget(world: World) -> None:
    """Allow many failovers and a short failback (API minimum: above the detection window)."""
    with world.cluster.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            PLURAL,
            POOL_NAME,
            {"spec": {"failover": {"failbackDelaySeconds": 3, "maxFailoversPerHour": 60}}},
        )


def converged(world: World, target: dict[str, int]) -> bool:
    return (
        world.route_weights() == target and status_matches_route(world) and clouds_match_plan(world)
    )


async def run_trial(world: World, *, index: int, rng: random.Random) -> Trial:
    """Start a failover (or failback), SIGKILL the leader mid-way, restart, wait to converge."""
    to_gke = world.route_weights() == AWS_ALL
    target = GKE_ALL if to_gke else AWS_ALL
    mark = len(world.gke.state.requests)
    trial = Trial(
        index=index,
        direction="failover" if to_gke else "failback",
        kill_after_s=round(rng.uniform(0.0, KILL_WINDOW_S), 2),
        weights_at_kill={},
        gke_size_before=world.gke_nodes(),
    )
    world.aws_server.set_behaviour(
        Behaviour.ERROR_5XX if to_gke else Behaviour.HEALTHY, **({"status": 503} if to_gke else {})
    )
    onset = time.monotonic()
    await eventually(
        lambda: time.monotonic() - onset >= trial.kill_after_s,
        timeout_s=KILL_WINDOW_S + 1,
        what="the kill point",
        interval_s=0.02,
    )
    killed = world.operators[-1]
    killed.kill()
    trial.weights_at_kill = world.route_weights()
    successor = restart_in_place(world, killed)
    await successor.wait_ready(timeout_s=READY_TIMEOUT_S)
    try:
        await eventually(
            lambda: converged(world, target),
            timeout_s=CONVERGE_TIMEOUT_S,
            what=f"trial {index} ({trial.direction}) converged to {target} and its plan",
        )
    except AssertionError as exc:
        trial.problems.append(str(exc))
    trial.converge_s = round(time.monotonic() - onset, 2)
    trial.set_sizes = gke_set_sizes(world, since=mark)
    trial.problems += scale_request_problems(trial)
    trial.problems += orphaned_capacity(world)
    trial.problems += operator_log_problems(successor)
    return trial


async def test_sigkill_at_random_points_converges_without_duplicate_scale(world: World) -> None:
    rng = random.Random(SEED)
    first = world.operator()
    await first.wait_ready()
    loosen_failover_budget(world)
    await eventually(
        lambda: (
            world.route_weights() == AWS_ALL
            and (world.pool().get("status") or {}).get("healthyPlacements") == "2/2"
        ),
        timeout_s=CONVERGE_TIMEOUT_S,
        what="steady state on aws with a warm standby",
    )
    trials: list[Trial] = []
    started = time.monotonic()
    for index in range(TRIALS):
        trial = await run_trial(world, index=index, rng=rng)
        trials.append(trial)
        if any("timed out" in p for p in trial.problems):
            break  # the next trial would start from an unknown place
    failed = {t.index: t.problems for t in trials if t.problems}
    summary = {
        "trials": len(trials),
        "seed": SEED,
        "failovers": sum(t.direction == "failover" for t in trials),
        "failbacks": sum(t.direction == "failback" for t in trials),
        "converge_s_max": max(t.converge_s for t in trials),
        "failed_trials": sorted(failed),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(f"\n[faults] sigkill: {json.dumps(summary)}")
    for t in trials:
        print(f"[faults] trial {json.dumps(asdict(t))}")
    assert not failed, f"trials with problems (seed {SEED}): {json.dumps(failed, indent=1)}"
    assert len(trials) == TRIALS
