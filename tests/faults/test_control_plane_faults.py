"""The management control plane fails in the middle of a traffic shift.

- The apiserver crashes and restarts (SIGKILL, started again on the same port and PKI):
  the operator reconnects, finishes the shift, keeps its engine state and history, and
  neither exits nor logs a traceback. An outage longer than the Lease's renew deadline
  (handlers/leadership.py) is the one exception, by design: the leader then steps down
  (exit code 3, so two replicas never act at once) and, restarted as the kubelet would,
  resumes from its persisted state. A graceful SIGTERM restart drains open watches first
  (about 10 s here), so it always takes that path; the crash keeps the outage to the
  start-up time (2-5 s measured).
- etcd freezes (SIGSTOP). docs/failure-modes.md ("Management apiserver unreachable") says
  nothing is changed, the gateway keeps the last weights, and no condition can be written.
  For a freeze shorter than the Lease's renew deadline (handlers/leadership.py) the
  apiserver just holds every request until etcd is back: the operator waits, then finishes
  the shift. A freeze past the apiserver's own etcd timeout makes it answer 504; the leader
  cannot renew its Lease within the renew deadline and steps down on purpose (exit code 3,
  so two replicas never act at once); restarted, it resumes from its persisted state.
  In every case no version of the HTTPRoute has all weights at zero.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from crossfade.handlers.leadership import RENEW_DEADLINE_S
from crossfade.handlers.process import EXIT_LOST_LEADERSHIP, RunConfig
from crossfade.testing.inference_server import Behaviour
from tests.e2e.world import (
    OperatorProcess,
    World,
    eventually,
)
from tests.faults.support import (
    AWS_ALL,
    GKE_ALL,
    RouteRecorder,
    clouds_match_plan,
    engine_state,
    operator_log_problems,
    restart_in_place,
    status_matches_route,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

STEADY_TIMEOUT_S = 60.0
MID_SHIFT_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 60.0
ETCD_SHORT_PAUSE_S = 5.0
assert ETCD_SHORT_PAUSE_S < RENEW_DEADLINE_S, "a longer outage makes the leader step down"
# The test apiserver gives up a write to a frozen etcd after about 34 s and answers 504
# (reads may wait for etcd to come back).
ETCD_LONG_PAUSE_S = 40.0
STEP_DOWN_TIMEOUT_S = 60.0
LEASE_NAME = RunConfig().lease_name
WRITE_TIMEOUT_S = 60


def write_answer(world: World) -> int:
    """HTTP status of one write (a namespace annotation) made while etcd is frozen."""
    with world.cluster.api_client() as api:
        try:
            client.CoreV1Api(api).patch_namespace(
                world.namespace,
                {"metadata": {"annotations": {"crossfade.dev/fault-probe": str(time.time())}}},
                _request_timeout=WRITE_TIMEOUT_S,
            )
        except ApiException as exc:
            return int(exc.status)
    return 200


def timed_read(world: World) -> float:
    """Read the HTTPRoute; return when the answer came (monotonic clock)."""
    world.route_weights()
    return time.monotonic()


def lease_renewed_since(world: World, moment: datetime.datetime) -> bool:
    with world.cluster.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE_NAME, world.namespace)
    renewed = lease.spec.renew_time if lease.spec is not None else None
    return renewed is not None and renewed >= moment


def history(world: World) -> list[dict[str, Any]]:
    return list((world.pool().get("status") or {}).get("history") or ())


def mid_shift(world: World) -> dict[str, int] | None:
    weights = world.route_weights()
    return weights if 0 < weights["gke"] < 100 else None


async def start_failover(world: World) -> tuple[OperatorProcess, dict[str, int]]:
    """A steady pool on aws whose primary then fails; return once traffic is split."""
    op = world.operator()
    await op.wait_ready()
    await eventually(
        lambda: (
            world.route_weights() == AWS_ALL
            and (world.pool().get("status") or {}).get("healthyPlacements") == "2/2"
        ),
        timeout_s=STEADY_TIMEOUT_S,
        what="steady state on aws with a warm standby",
    )
    world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
    split = await eventually(
        lambda: mid_shift(world),
        timeout_s=MID_SHIFT_TIMEOUT_S,
        what="traffic split between aws and gke (mid-shift)",
        interval_s=0.05,
    )
    return op, split


async def finished(world: World) -> None:
    await eventually(
        lambda: (
            world.route_weights() == GKE_ALL
            and status_matches_route(world)
            and clouds_match_plan(world)
        ),
        timeout_s=CONVERGE_TIMEOUT_S,
        what="the shift finished on gke, status and clouds agreeing",
    )


async def test_apiserver_crash_and_restart_mid_shift(world: World) -> None:
    async with RouteRecorder(world) as routes:
        op, split = await start_failover(world)
        history_before, state_before = history(world), engine_state(world)
        started = time.monotonic()
        await asyncio.to_thread(world.cluster.restart, graceful=False)
        outage_s = time.monotonic() - started
        back_at = datetime.datetime.now(datetime.UTC)
        # Either the leader renews its Lease on the restarted apiserver, or it has stepped
        # down because the outage outlasted its renew deadline.
        await eventually(
            lambda: not op.alive() or lease_renewed_since(world, back_at),
            timeout_s=STEP_DOWN_TIMEOUT_S,
            what="the leader renewing its Lease or stepping down",
        )
        if not op.alive():
            # Longer than the renew deadline can bridge: the leader must step down cleanly,
            # and a restart (as the kubelet's) resumes from the persisted state.
            await eventually(
                lambda: not op.alive(), timeout_s=STEP_DOWN_TIMEOUT_S, what="the step-down"
            )
            stepped_down = op.process.returncode if op.process is not None else None
            assert stepped_down == EXIT_LOST_LEADERSHIP, op.log_tail()
            assert "Traceback" not in op.log_path.read_text(errors="replace"), op.log_tail()
            op = restart_in_place(world, op)
            await op.wait_ready()
        await finished(world)
    history_after, state_after = history(world), engine_state(world)
    figures = {
        "split_at_restart": split,
        "outage_s": round(outage_s, 1),
        "operator_restarted": len(world.operators) > 1,
        "route_versions": [w for _, w in routes.versions],
        "route_watch_relists": routes.relists,
        "history_entries": len(history_after),
    }
    print(f"\n[faults] apiserver crash+restart mid-shift: {json.dumps(figures)}")
    assert not operator_log_problems(op), (operator_log_problems(op), op.log_tail())
    assert all(entry in history_after for entry in history_before), "history lost entries"
    assert any(h.get("from") == "aws" and h.get("to") == "gke" for h in history_after), (
        history_after
    )
    assert state_after.get("weights") == GKE_ALL, state_after
    kept = state_after["transitions"][: len(state_before["transitions"])]
    assert kept == state_before["transitions"], "engine state lost transitions"
    assert not routes.all_zero_versions(), routes.versions


async def test_etcd_frozen_briefly_mid_shift(world: World) -> None:
    """Shorter than the renew deadline: requests wait for etcd, then go through."""
    async with RouteRecorder(world) as routes:
        op, split = await start_failover(world)
        with world.cluster.etcd.paused():
            blocked = asyncio.create_task(asyncio.to_thread(timed_read, world))
            await asyncio.sleep(ETCD_SHORT_PAUSE_S)
            resumed_at = time.monotonic()
        read_done_at = await blocked
        await finished(world)
    figures = {
        "split_at_pause": split,
        "pause_s": ETCD_SHORT_PAUSE_S,
        "route_versions": [w for _, w in routes.versions],
    }
    print(f"\n[faults] etcd frozen {ETCD_SHORT_PAUSE_S:g}s mid-shift: {json.dumps(figures)}")
    assert read_done_at >= resumed_at, "the freeze did not hold up the apiserver"
    assert not operator_log_problems(op), (operator_log_problems(op), op.log_tail())
    assert not routes.all_zero_versions(), routes.versions
    gke_weights = [w["gke"] for _, w in routes.versions]
    assert gke_weights == sorted(gke_weights), "the shift went back and forth"


async def test_etcd_frozen_past_the_apiserver_timeout_mid_shift(world: World) -> None:
    """Long enough for the apiserver to answer 504: the leader cannot renew its Lease and
    steps down cleanly (exit 3); restarted as the kubelet would, it finishes the shift."""
    async with RouteRecorder(world) as routes:
        op, split = await start_failover(world)
        history_before = history(world)
        with world.cluster.etcd.paused():
            answer = asyncio.create_task(asyncio.to_thread(write_answer, world))
            await asyncio.sleep(ETCD_LONG_PAUSE_S)
        status_during = await answer
        await eventually(
            lambda: not op.alive(), timeout_s=STEP_DOWN_TIMEOUT_S, what="the leader stepping down"
        )
        exit_code = op.process.returncode if op.process is not None else None
        successor = restart_in_place(world, op)
        await successor.wait_ready()
        await finished(world)
    figures = {
        "split_at_pause": split,
        "pause_s": ETCD_LONG_PAUSE_S,
        "apiserver_write_answer_during_pause": status_during,
        "exit_code": exit_code,
        "route_versions": [w for _, w in routes.versions],
    }
    print(f"\n[faults] etcd frozen {ETCD_LONG_PAUSE_S:g}s mid-shift: {json.dumps(figures)}")
    assert status_during >= 500, "the apiserver answered an error while etcd was frozen"
    assert exit_code == EXIT_LOST_LEADERSHIP, op.log_tail()
    assert "Traceback" not in op.log_path.read_text(errors="replace"), op.log_tail()
    assert not operator_log_problems(successor), successor.log_tail()
    assert all(entry in history(world) for entry in history_before), "history lost entries"
    assert not routes.all_zero_versions(), routes.versions
