"""End-to-end: the operator killed mid-failover, a standby replica taking over, and the
documented manual overrides and invalid updates."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.testing.inference_server import Behaviour

from .test_failover import DETECT_TIMEOUT_S, all_healthy, report, weights_are
from .world import GROUP, PLURAL, POOL_NAME, VERSION, World, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE_TAKEOVER_TIMEOUT_S = 40.0


def gke_set_size_calls(world: World, node_count: int) -> int:
    return sum(
        1
        for r in list(world.gke.state.requests)
        if r.method == "POST"
        and r.path.endswith(":setSize")
        and (r.body or {}).get("nodeCount") == node_count
    )


async def steady(world: World) -> None:
    await eventually(
        lambda: all_healthy(world) and weights_are(world, {"aws": 100, "gke": 0}),
        timeout_s=DETECT_TIMEOUT_S,
        what="steady state, both placements healthy",
    )


async def test_scenario3_killed_mid_failover_restarts_and_finishes_without_duplicate_scale_up(
    world: World,
) -> None:
    first = world.operator()
    await first.wait_ready()
    await steady(world)
    world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    await eventually(
        lambda: gke_set_size_calls(world, 2) >= 1,
        timeout_s=DETECT_TIMEOUT_S,
        what="the failover scale-up of gke",
        interval_s=0.05,
    )
    first.kill()  # SIGKILL: no lease release, no cleanup
    killed_at = time.time()
    assert world.route_weights()["gke"] < 100, "killed before the shift completed"
    second = world.operator()
    await second.wait_ready(timeout_s=LEASE_TAKEOVER_TIMEOUT_S)
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=DETECT_TIMEOUT_S,
        what="failover finished by the new process",
    )
    # No duplicate scale-up: only sizes 1 (warm) and 2 (failover) were ever asked for, the
    # failover resize exactly once (the new process adopts the pool's size from its Nodes).
    sizes = {
        (r.body or {}).get("nodeCount")
        for r in list(world.gke.state.requests)
        if r.method == "POST" and r.path.endswith(":setSize")
    }
    assert sizes == {1, 2}, sizes
    assert world.gke_nodes() == 2
    assert gke_set_size_calls(world, 2) == 1
    history = world.pool()["status"]["history"]
    assert [h["to"] for h in history].count("gke") >= 1
    report(
        "scenario3",
        {
            "kill_to_finished_s": round(time.time() - killed_at, 2),
            "gke_set_size_2_writes": gke_set_size_calls(world, 2),
        },
    )


async def test_scenario4_standby_replica_takes_over(world: World) -> None:
    first = world.operator()
    await first.wait_ready()
    standby = world.operator()
    await eventually(
        lambda: standby.get("/readyz")[0] == 200, timeout_s=30, what="standby replica up"
    )
    assert '"leader": false' in standby.get("/readyz")[1]
    assert "crossfade_leader 0.0" in standby.metrics()
    await steady(world)
    first.kill()
    killed_at = time.time()
    await standby.wait_ready(timeout_s=LEASE_TAKEOVER_TIMEOUT_S)
    takeover_s = time.time() - killed_at
    world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=DETECT_TIMEOUT_S,
        what="failover by the new leader",
    )
    assert "crossfade_leader 1.0" in standby.metrics()
    report("scenario4", {"takeover_s": round(takeover_s, 2)})


async def test_scenario6_manual_overrides_and_invalid_updates(world: World) -> None:
    op = world.operator()
    await op.wait_ready()
    await steady(world)
    # An update the API refuses (min > max) never reaches the operator; serving goes on.
    with world.cluster.api_client() as api, pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            PLURAL,
            POOL_NAME,
            {"spec": {"failover": {"tolerationSeconds": -5}}},
        )
    assert refused.value.status == 422

    world.annotate({"crossfade.dev/force-failover": "gke"})
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=30,
        what="forced failover to gke",
    )
    annotations = await eventually(
        lambda: (
            world.pool()["metadata"]["annotations"].get("crossfade.dev/pin") == "gke"
            and world.pool()["metadata"]["annotations"]
        ),
        timeout_s=10,
        what="force becomes a pin",
    )
    assert "crossfade.dev/force-failover" not in annotations
    assert world.gke_nodes() >= 2

    world.annotate({"crossfade.dev/pin": "azure"})  # names no placement
    await eventually(
        lambda: any(r == "InvalidManualControl" for _, r, _ in world.events()),
        timeout_s=15,
        what="InvalidManualControl event",
    )
    assert world.route_weights() == {"aws": 0, "gke": 100}, "invalid control changes nothing"

    world.annotate({"crossfade.dev/pin": None, "crossfade.dev/resume": "now"})
    await eventually(
        lambda: "crossfade.dev/resume" not in world.pool()["metadata"]["annotations"],
        timeout_s=15,
        what="resume consumed",
    )
    await eventually(
        lambda: weights_are(world, {"aws": 100, "gke": 0}),
        timeout_s=90,
        what="automatic failback to the healthy preferred placement",
    )
    reasons = {r for _, r, _ in world.events()}
    assert "ManualControl" in reasons


async def test_deletion_with_scale_to_min_returns_node_groups_to_their_minimum(
    world: World,
) -> None:
    op = world.operator()
    await op.wait_ready()
    await steady(world)
    world.annotate({"crossfade.dev/force-failover": "gke"})
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=30,
        what="traffic on gke before deletion",
    )
    pool = world.pool()
    assert "crossfade.dev/finalizer" in pool["metadata"]["finalizers"]
    with world.cluster.api_client() as api:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, world.namespace, PLURAL, POOL_NAME
        )

    def gone() -> bool:
        try:
            world.pool()
        except ApiException as exc:
            return exc.status == 404
        return False

    await eventually(gone, timeout_s=30, what="pool deleted after its finalizer ran")
    assert world.route_weights() == {"aws": 100, "gke": 0}, "traffic left on capacity that stays"
    assert world.gke_nodes() == 0
    assert world.eks_desired() == 1
