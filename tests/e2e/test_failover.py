"""End-to-end failover: `crossfade run` against real apiservers, moto EKS, the GKE test server
and fake inference endpoints, with a traffic generator measuring what clients see."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from kubernetes import client

from crossfade.testing.inference_server import Behaviour
from crossfade.testing.traffic import HTTPRouteWeights, TrafficGenerator, summarize

from .world import GROUP, PLURAL, POOL_NAME, SERVICES, VERSION, World, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DETECT_TIMEOUT_S = 60.0
BOTH_FAIL_TOLERATION_S = 3
RESULTS: dict[str, dict[str, float]] = {}


def weights_are(world: World, wanted: dict[str, int]) -> bool:
    return world.route_weights() == wanted


def all_healthy(world: World) -> bool:
    return (world.pool().get("status") or {}).get("healthyPlacements") == "2/2"


def status_weights(world: World) -> dict[str, int]:
    placements = (world.pool().get("status") or {}).get("placements") or ()
    return {p["name"]: p.get("weight", 0) for p in placements}


async def start_traffic(world: World) -> tuple[TrafficGenerator, asyncio.Event, asyncio.Task[None]]:
    api = await world.cluster.async_api_client()
    generator = TrafficGenerator(
        weights=HTTPRouteWeights(api=api, namespace=world.namespace, name="chat"),
        endpoints={
            SERVICES["aws"]: world.aws_server.base_url,
            SERVICES["gke"]: world.gke_server.base_url,
        },
        rate_per_s=20.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(generator.run(stop))
    task.add_done_callback(lambda _: asyncio.ensure_future(api.close()))
    return generator, stop, task


def report(name: str, figures: dict[str, float]) -> None:
    RESULTS[name] = figures
    print(f"\n[e2e] {name}: {json.dumps(figures)}")


async def test_scenario1_aws_fails_standby_scaled_traffic_shifted_then_fails_back(
    world: World,
) -> None:
    op = world.operator()
    await op.wait_ready()
    await eventually(
        lambda: weights_are(world, {"aws": 100, "gke": 0}) and world.gke_nodes() >= 1,
        timeout_s=DETECT_TIMEOUT_S,
        what="steady state with a warm GKE standby",
    )
    generator, stop, task = await start_traffic(world)
    await asyncio.sleep(2)

    outage_at = time.time()
    world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=DETECT_TIMEOUT_S,
        what="all traffic on gke",
    )
    shifted_at = time.time()
    assert world.gke_nodes() >= 2, "the standby was scaled up to carry the full load"
    pool = world.pool()
    assert pool["status"]["activePlacement"] == "gke"
    assert status_weights(world) == {"aws": 0, "gke": 100}
    placements = {p["name"]: p for p in pool["status"]["placements"]}
    assert placements["aws"]["health"] == "Unhealthy"
    assert pool["status"]["history"][0]["to"] == "gke"
    reasons = {reason for _, reason, _ in world.events()}
    assert "ProbeFailures" in reasons or "Unhealthy" in reasons, reasons
    metrics = op.metrics()
    assert "crossfade_failovers_total" in metrics
    labels = f'namespace="{world.namespace}",placement="gke",pool="chat"'
    assert f"crossfade_placement_weight{{{labels}}} 100.0" in metrics
    assert "crossfade_detection_to_shift_seconds_count" in metrics
    # Pass durations are one histogram for all pools: no 12 series per pool.
    durations = [line for line in metrics.splitlines() if "reconcile_duration_seconds" in line]
    assert durations and not [line for line in durations if "pool=" in line], durations
    (count,) = [
        line for line in durations if line.startswith("crossfade_reconcile_duration_seconds_count ")
    ]
    assert float(count.rsplit(" ", 1)[1]) >= 2

    world.aws_server.set_behaviour(Behaviour.HEALTHY)
    recovered_at = time.time()
    seen: list[dict[str, int]] = []

    def back_on_aws() -> bool:
        weights = world.route_weights()
        if not seen or seen[-1] != weights:
            seen.append(weights)
        return weights == {"aws": 100, "gke": 0}

    await eventually(back_on_aws, timeout_s=120.0, what="failback to aws", interval_s=0.1)
    failback_s = time.time() - recovered_at
    stop.set()
    await task
    assert failback_s >= 15, "failback waited for failbackDelaySeconds"
    assert any(0 < w["aws"] < 100 for w in seen), f"failback moved in steps: {seen}"
    outage = summarize(generator.records, start=outage_at, end=shifted_at)
    report(
        "scenario1",
        {
            "detection_to_shift_s": round(shifted_at - outage_at, 2),
            "failed_share_during_outage": round(outage.failed_share, 3),
            "failback_s": round(failback_s, 1),
        },
    )


async def test_scenario5_both_fail_fail_static(world: World) -> None:
    op = world.operator()
    await op.wait_ready()
    # Both placements must be known Healthy first: a standby still Unknown when the primary
    # fails is a legitimate failover target, not a "both failed" case.
    await eventually(
        lambda: all_healthy(world) and weights_are(world, {"aws": 100, "gke": 0}),
        timeout_s=DETECT_TIMEOUT_S,
        what="steady state, both placements healthy",
    )
    # Probes run on their own jittered periods, so two endpoints failing at the same instant
    # cross failureThreshold up to a period apart; a toleration longer than that lets the
    # operator see both failing before it acts (with 0 it rightly fails over at once).
    with world.cluster.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            world.namespace,
            PLURAL,
            POOL_NAME,
            {"spec": {"failover": {"tolerationSeconds": BOTH_FAIL_TOLERATION_S}}},
        )
    await eventually(
        lambda: world.pool()["status"].get("observedGeneration") == 2,
        timeout_s=DETECT_TIMEOUT_S,
        what="the operator serving the new spec",
    )
    generator, stop, task = await start_traffic(world)
    outage_at = time.time()
    world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    world.gke_server.set_behaviour(Behaviour.ERROR_5XX, status=503)

    def fail_static() -> bool:
        condition = world.condition("FailStatic")
        return condition is not None and condition["status"] == "True"

    await eventually(fail_static, timeout_s=DETECT_TIMEOUT_S, what="FailStatic condition")
    detected_at = time.time()
    await asyncio.sleep(5)
    stop.set()
    await task
    assert world.route_weights() == {"aws": 100, "gke": 0}, "weights untouched"
    assert "crossfade_fail_static{namespace=" in op.metrics()
    outage = summarize(generator.records, start=outage_at, end=detected_at)
    report(
        "scenario5",
        {
            "detection_s": round(detected_at - outage_at, 2),
            "failed_share_during_outage": round(outage.failed_share, 3),
        },
    )
