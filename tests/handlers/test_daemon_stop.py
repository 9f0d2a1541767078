"""A stopped pool loop ends by itself, not by kopf's cancellation (handlers/settings.py).

kopf runs in this process with crossfade's own settings against the real apiserver; its
daemon runs ``run_pool_loop`` with an hour-long period, as the operator's does. When kopf
stops, the loop is asleep: the stop watch of handlers/wakeup.py must wake it and the daemon
return within kopf's wait for an instant exit. Without that wait kopf cancels every
sleeping loop, with a warning per pool.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf
import pytest

from crossfade.handlers.settings import configure
from crossfade.handlers.wakeup import PoolWakeups, run_pool_loop
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import BASE_POOL

from .kopf_in_process import kopf_running, pool_resource, pools_served

HOUR_S = 3600.0
FIRST_PASS_WAIT_S = 30.0


def _registry(first_pass_done: asyncio.Event, outcomes: list[str]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = pool_resource(registry)

    @kopf.daemon(**resource, cancellation_timeout=10.0)
    async def pool_loop(**kwargs: Any) -> None:
        async def one_pass() -> float:
            first_pass_done.set()
            return HOUR_S

        try:
            await run_pool_loop(
                f"{kwargs['namespace']}/{kwargs['name']}",
                body=kwargs["body"],
                stopped=kwargs["stopped"],
                wakeups=PoolWakeups(),
                one_pass=one_pass,
                after_pass=lambda: None,
            )
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise
        outcomes.append("returned")

    return registry


async def test_kopf_stopping_ends_a_sleeping_pool_loop_without_cancelling_it(
    management_cluster: TestCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = pools_served(management_cluster, namespace, monkeypatch)
    body = copy.deepcopy(BASE_POOL)
    body["metadata"] = {"name": "sleeper"}
    assert pools.create(body).ok
    first_pass_done = asyncio.Event()
    outcomes: list[str] = []
    settings = kopf.OperatorSettings()
    configure(settings, component="crossfade-test", instance="test")
    async with kopf_running(_registry(first_pass_done, outcomes), namespace, settings=settings):
        await asyncio.wait_for(first_pass_done.wait(), timeout=FIRST_PASS_WAIT_S)
        await asyncio.sleep(0.2)  # the loop is in its hour-long sleep now
    assert outcomes == ["returned"]
