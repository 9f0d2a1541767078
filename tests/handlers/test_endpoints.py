"""The process's /metrics, /healthz and /readyz over real HTTP on loopback, and status text."""

from __future__ import annotations

import aiohttp

from crossfade.handlers.health import ProcessHealth, start_server
from crossfade.handlers.metrics import OperatorMetrics
from crossfade.handlers.status_view import format_pool, format_pools
from crossfade.testing.controlplane import free_port


async def test_endpoints_report_metrics_liveness_and_readiness() -> None:
    metrics = OperatorMetrics()
    clock = [100.0]
    health = ProcessHealth(clock=lambda: clock[0], last_tick=100.0)
    metrics.observe_pool(
        namespace="ns",
        pool="chat",
        health={"aws": "Unhealthy"},
        weights={"aws": 0, "gke": 100},
        desired={"gke": 2},
        fail_static=False,
    )
    metrics.provider_call(placement="gke", operation="scale", error="Throttled")
    port = free_port()
    runner = await start_server(metrics=metrics, health=health, host="127.0.0.1", port=port)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert (
                'crossfade_placement_weight{namespace="ns",placement="gke",pool="chat"} 100.0'
                in text
            )
            assert (
                'crossfade_provider_throttles_total{operation="scale",placement="gke"} 1.0' in text
            )
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503  # not leading yet
            health.leader = health.kopf_ready = True
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            clock[0] += 1000  # loops stopped ticking
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 503
    finally:
        await runner.cleanup()


def test_forget_pool_drops_its_series() -> None:
    metrics = OperatorMetrics()
    metrics.observe_pool(
        namespace="ns",
        pool="chat",
        health={"aws": "Healthy"},
        weights={"aws": 100},
        desired={},
        fail_static=False,
    )
    metrics.forget_pool(namespace="ns", pool="chat", placements=["aws"])
    assert b'pool="chat"' not in metrics.render()


def test_status_summary_shows_placements_conditions_and_history() -> None:
    pool = {
        "metadata": {
            "namespace": "ns",
            "name": "chat",
            "annotations": {"crossfade.dev/pin": "gke", "other": "x"},
        },
        "spec": {
            "placements": [
                {"name": "aws", "priority": 100, "provider": {"type": "EKSNodeGroup"}},
                {"name": "gke", "priority": 50},
            ]
        },
        "status": {
            "phase": "FailedOver",
            "activePlacement": "gke",
            "weights": {"aws": 0, "gke": 100},
            "placements": [{"name": "aws", "health": "Unhealthy", "reason": "ProbeFailures"}],
            "conditions": [
                {
                    "type": "FailedOver",
                    "status": "True",
                    "reason": "Failover",
                    "message": "aws failing",
                }
            ],
            "history": [
                {"time": "t", "reason": "Failover", "from": "aws", "to": "gke", "message": "m"}
            ],
        },
    }
    text = format_pool(pool)
    assert text.splitlines()[0].startswith("ns/chat: FailedOver (active: gke")
    assert "crossfade.dev/pin=gke" in text and "other=x" not in text
    assert "EKSNodeGroup" in text and "Unhealthy" in text and "ProbeFailures" in text
    assert "FailedOver=True Failover: aws failing" in text
    assert "aws -> gke" in text
    assert format_pools([]) == "no InferencePools found"
