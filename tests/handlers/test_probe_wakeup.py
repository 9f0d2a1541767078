"""Probe news wakes the pool's loop: a failing probe, or a changed outcome, starts a pass.

Before this, the pass that saw the threshold-th failed probe came up to one pass period
after that probe (on average half a period late), which added that delay to every
endpoint-only failover (bench/results/recovery.md). The probes here run on the real
``ProbeScheduler`` through ``ScheduledProbes``; only their outcomes are scripted, and the
scheduler's sleep is a fake clock, so pass counts are asserted, never wall time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.handlers.probe_feed import ScheduledProbes
from crossfade.handlers.wakeup import PoolWakeups, run_pool_loop
from crossfade.probes.scheduler import ProbeSpec

from .fakes import pool_body

KEY = "ns/chat"
HOUR_S = 3600.0
TURNS = 50
HEALTHY, FAILING = ProbeOutcome.HEALTHY, ProbeOutcome.FAILING


class ScriptedEndpoint:
    """Answers each probe with the next scripted outcome; the probe loop then waits."""

    def __init__(self, outcomes: list[ProbeOutcome]) -> None:
        self.outcomes = deque(outcomes)
        self.probed = asyncio.Event()
        self.release = asyncio.Event()

    async def probe(self) -> ProbeResult:
        return ProbeResult(placement="aws", at=0.0, outcome=self.outcomes.popleft())

    async def sleep(self, _seconds: float) -> None:
        """The scheduler's sleep: one probe per ``step()``, none once the script is spent."""
        self.probed.set()
        await self.release.wait()
        self.release.clear()

    async def step(self) -> None:
        self.probed.clear()
        self.release.set()
        await self.probed.wait()
        await settle()


async def settle() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


class LoopWithProbes:
    """A pool loop whose pass drains the pool's scheduled probes, as reconcile_once does."""

    def __init__(self, endpoint: ScriptedEndpoint) -> None:
        self.wakeups = PoolWakeups()
        self.probes = ScheduledProbes(on_news=self.wakeups.nudge, sleep=endpoint.sleep)
        spec = ProbeSpec(name="inference/aws", period_s=1.0, timeout_s=1.0, run=endpoint.probe)
        self.feed = self.probes.feed(KEY, [spec])
        self.seen: list[tuple[ProbeOutcome, ...]] = []
        self.stopper: FlagSetter[Any] = FlagSetter()
        self.task: asyncio.Task[None] | None = None

    async def one_pass(self) -> float:
        drained = await self.feed.drain()
        self.seen.append(tuple(result.outcome for result in drained.probes))
        return HOUR_S

    async def start(self) -> None:
        self.task = asyncio.create_task(
            run_pool_loop(
                KEY,
                body=pool_body({"placements": []}, generation=1),
                stopped=AsyncFlagWaiter(self.stopper),
                wakeups=self.wakeups,
                one_pass=self.one_pass,
                after_pass=lambda: None,
            )
        )
        await settle()

    async def stop(self) -> None:
        self.stopper.set()
        assert self.task is not None
        await self.task
        await self.probes.close()


async def test_failing_probes_each_start_a_pass_and_steady_health_starts_none() -> None:
    endpoint = ScriptedEndpoint([HEALTHY, HEALTHY, HEALTHY, FAILING, FAILING, FAILING])
    loop = LoopWithProbes(endpoint)
    await loop.start()
    assert loop.seen == [()]  # the first pass starts the probes
    await endpoint.step()  # first result: news (nothing known before)
    await endpoint.step()  # healthy again: no news, the loop sleeps on
    await endpoint.step()
    assert loop.seen == [(), (HEALTHY,)]
    for _ in range(3):
        await endpoint.step()
    assert loop.seen == [(), (HEALTHY,), (HEALTHY, HEALTHY, FAILING), (FAILING,), (FAILING,)]
    await loop.stop()


async def test_recovery_is_news_once() -> None:
    endpoint = ScriptedEndpoint([FAILING, HEALTHY, HEALTHY])
    loop = LoopWithProbes(endpoint)
    await loop.start()
    for _ in range(3):
        await endpoint.step()
    assert loop.seen == [(), (FAILING,), (HEALTHY,)]
    await loop.stop()


async def test_nudge_before_the_first_pass_wakes_nothing() -> None:
    wakeups = PoolWakeups()
    assert not wakeups.nudge(KEY)
