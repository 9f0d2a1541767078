"""SIGKILL the operator at seeded random points of failovers and failbacks; it must converge."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass

import boto3
import pytest
from kubernetes import client

from crossfade.testing.inference_server import Behaviour
from tests.e2e.world import GROUP, PLURAL, POOL_NAME, REGION, VERSION, World, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

SEED = 20261126
MIN_TRIALS = 10
TRIAL_BUDGET_S = 150.0
NODES_MAX = 2  # both placements of the e2e pool
KILL_WINDOW_S = 4.0
CONVERGE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 45.0
AWS_ALL = {"aws": 100, "gke": 0}
GKE_ALL = {"aws": 0, "gke": 100}


@dataclass(frozen=True)
class Trial:
    """One kill: which direction was under way, when the kill landed, what followed."""

    index: int
    direction: str
    kill_after_s: float
    weights_at_kill: dict[str, int]
    converge_s: float
    scale_requests: dict[str, int]


def gke_scale_requests(world: World, *, since: int) -> list[str]:
    """Every GKE setSize request after position ``since``, as 'setSize=N'."""
    return [
        f"setSize={(r.body or {}).get('nodeCount')}"
        for r in list(world.gke.state.requests)[since:]
        if r.method == "POST" and r.path.endswith(":setSize")
    ]


def status_matches_route(world: World) -> bool:
    """Status weights agree with the HTTPRoute (the status is not left behind by the crash)."""
    placements = (world.pool().get("status") or {}).get("placements") or ()
    in_status = {p["name"]: int(p.get("weight", 0)) for p in placements}
    return in_status == world.route_weights()


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


async def run_trial(world: World, *, index: int, rng: random.Random) -> Trial:
    """Start a failover (or failback), SIGKILL the leader mid-way, restart, wait to converge."""
    to_gke = world.route_weights() == AWS_ALL
    direction = "failover" if to_gke else "failback"
    target = GKE_ALL if to_gke else AWS_ALL
    mark = len(world.gke.state.requests)
    kill_after_s = round(rng.uniform(0.0, KILL_WINDOW_S), 2)
    if to_gke:
        world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    else:
        world.aws_server.set_behaviour(Behaviour.HEALTHY)
    onset = time.monotonic()
    await eventually(
        lambda: time.monotonic() - onset >= kill_after_s,
        timeout_s=KILL_WINDOW_S + 1,
        what="the kill point",
        interval_s=0.02,
    )
    world.operators[-1].kill()
    weights_at_kill = world.route_weights()
    successor = world.operator()
    await successor.wait_ready(timeout_s=READY_TIMEOUT_S)
    await eventually(
        lambda: world.route_weights() == target and status_matches_route(world),
        timeout_s=CONVERGE_TIMEOUT_S,
        what=f"trial {index} ({direction}, kill at {kill_after_s}s) converged to {target}",
    )
    return Trial(
        index=index,
        direction=direction,
        kill_after_s=kill_after_s,
        weights_at_kill=weights_at_kill,
        converge_s=round(time.monotonic() - onset, 2),
        scale_requests=dict(Counter(gke_scale_requests(world, since=mark))),
    )


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
    while len(trials) < MIN_TRIALS or time.monotonic() - started < TRIAL_BUDGET_S:
        trials.append(await run_trial(world, index=len(trials), rng=rng))
    repeated = {
        t.index: t.scale_requests for t in trials if any(n > 1 for n in t.scale_requests.values())
    }
    shrunk_mid_failover = [
        t.index for t in trials if t.direction == "failover" and "setSize=1" in t.scale_requests
    ]
    summary = {
        "trials": len(trials),
        "seed": SEED,
        "failovers": sum(t.direction == "failover" for t in trials),
        "failbacks": sum(t.direction == "failback" for t in trials),
        "converge_s_max": max(t.converge_s for t in trials),
        "trials_with_repeated_scale_request": len(repeated),
        "failover_trials_that_shrank_the_standby": len(shrunk_mid_failover),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(f"\n[faults] sigkill: {json.dumps(summary)}")
    for t in trials:
        print(f"[faults] trial {json.dumps(t.__dict__)}")
    assert len(trials) >= MIN_TRIALS
    assert not repeated, f"repeated identical scale requests after a restart: {repeated}"
    # No orphaned or excess capacity: only the placements' own groups exist, within max.
    eks = boto3.client("eks", region_name=REGION, endpoint_url=world.moto_url)
    assert eks.list_nodegroups(clusterName=world.eks_cluster)["nodegroups"] == [world.nodegroup]
    assert list(world.gke.state.pools) == [world.node_pool_name]
    assert world.eks_desired() <= NODES_MAX
    assert world.gke_nodes() <= NODES_MAX
    assert set(gke_scale_requests(world, since=0)) <= {"setSize=1", "setSize=2"}
