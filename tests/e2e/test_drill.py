"""End-to-end: `crossfade drill` against the running operator on the real apiserver."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from crossfade.handlers import manual
from crossfade.testing.controlplane import REPO_ROOT
from crossfade.testing.inference_server import Behaviour

from .test_failover import report, weights_are
from .test_resilience import steady
from .world import POOL_NAME, World, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DRILL_PROCESS_TIMEOUT_S = 120.0
MANUAL_KEYS = (manual.FORCE_FAILOVER, manual.PIN, manual.DRILL, manual.RESUME)


async def drill(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `crossfade drill` as a user would; in a thread so the fake servers keep serving."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "crossfade.cli", "drill", POOL_NAME, "-n", world.namespace, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "KUBECONFIG": str(world.cluster.kubeconfig_path)},
        capture_output=True,
        text=True,
        timeout=DRILL_PROCESS_TIMEOUT_S,
        check=False,
    )


def gke_ready_nodes(world: World) -> int:
    for item in (world.pool().get("status") or {}).get("placements") or ():
        if item.get("name") == "gke":
            return int(item.get("readyNodes") or 0)
    return 0


async def warm(world: World) -> None:
    """Steady, and the warm standby's node is ready (a drill refuses a cold target)."""
    await steady(world)
    await eventually(lambda: gke_ready_nodes(world) >= 1, timeout_s=30, what="gke standby warm")


def manual_annotations(world: World) -> dict[str, str]:
    annotations = world.pool()["metadata"].get("annotations") or {}
    return {k: v for k, v in annotations.items() if k in MANUAL_KEYS}


async def test_drill_dry_run_then_full_drill_is_recorded_and_reversed(world: World) -> None:
    op = world.operator()
    await op.wait_ready()
    await warm(world)

    dry = await drill(world, "--to", "gke", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert manual.FORCE_FAILOVER in dry.stdout
    assert manual_annotations(world) == {}
    assert weights_are(world, {"aws": 100, "gke": 0})

    done = await drill(world, "--to", "gke", "--duration", "4s", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr + op.log_tail()
    assert "all traffic on gke" in done.stdout
    shift_s = float(done.stdout.split("all traffic on gke after ")[1].split(" s")[0])
    report("drill", {"drill_shift_s": shift_s})
    history = world.pool()["status"].get("history") or []
    drills = [h for h in history if h.get("reason") == "Drill"]
    assert len(drills) == 1 and drills[0]["to"] == "gke", history
    await eventually(
        lambda: manual_annotations(world) == {},
        timeout_s=15,
        what="drill marker, pin and resume cleared",
    )
    await eventually(
        lambda: any(r == "DrillEnded" for _, r, _ in world.events()),
        timeout_s=15,
        what="DrillEnded event",
    )
    await eventually(
        lambda: weights_are(world, {"aws": 100, "gke": 0}),
        timeout_s=90,
        what="automatic failback after the drill",
    )


async def test_drill_refuses_an_unhealthy_target_and_aborts_when_it_degrades(
    world: World,
) -> None:
    op = world.operator()
    await op.wait_ready()
    await warm(world)

    long_drill = asyncio.create_task(
        drill(world, "--to", "gke", "--duration", "10m", "--timeout", "60", "--error-budget", "2")
    )
    await eventually(
        lambda: weights_are(world, {"aws": 0, "gke": 100}),
        timeout_s=60,
        what="drill moved traffic to gke",
    )
    world.gke_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    aborted = await long_drill
    assert aborted.returncode == 1, aborted.stdout + aborted.stderr
    assert "error budget burnt" in aborted.stdout
    await eventually(
        lambda: weights_are(world, {"aws": 100, "gke": 0}),
        timeout_s=60,
        what="traffic back on the healthy aws after the rollback",
    )

    refused = await drill(world, "--to", "gke", "--duration", "1m")
    assert refused.returncode == 1
    assert "drill refused" in refused.stdout and "not Healthy" in refused.stdout
    assert manual.FORCE_FAILOVER not in manual_annotations(world)
