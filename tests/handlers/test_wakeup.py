"""A pool's loop is woken by a spec or manual-control change, not by its own writes.

The loop sleeps a period no test waits out (an hour); a change offered the way the kopf
watch-event handler offers it must start the next pass at once. Pass counts and the
generation each pass saw are asserted, never wall time. The stop flag is kopf's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from crossfade.handlers import manual
from crossfade.handlers.wakeup import PoolWakeups, run_pool_loop

from .fakes import pool_body

KEY = "ns/chat"
HOUR_S = 3600.0
STOP_POLL_S = 0.05
# Enough event-loop turns for a woken loop to finish its sleep and run the next pass.
TURNS = 50


class LoopUnderTest:
    """A pool loop over a live body, counting passes and what each one saw."""

    def __init__(self, wakeups: PoolWakeups | None = None, *, key: str = KEY) -> None:
        self.key = key
        self.body: dict[str, Any] = pool_body({"placements": []}, generation=1)
        self.wakeups = wakeups or PoolWakeups(stop_poll_s=STOP_POLL_S)
        self.stopper: FlagSetter[Any] = FlagSetter()
        self.seen: list[tuple[int, dict[str, str]]] = []
        self.task: asyncio.Task[None] | None = None

    async def one_pass(self) -> float:
        meta = self.body["metadata"]
        self.seen.append((meta["generation"], dict(meta["annotations"])))
        return HOUR_S

    async def start(self, *, passes: int = 1) -> None:
        self.task = asyncio.create_task(
            run_pool_loop(
                self.key,
                body=self.body,
                stopped=AsyncFlagWaiter(self.stopper),
                wakeups=self.wakeups,
                one_pass=self.one_pass,
                after_pass=lambda: None,
            )
        )
        await settle()
        assert len(self.seen) == passes

    async def stop(self) -> None:
        self.stopper.set()
        assert self.task is not None
        await self.task

    def offer(self) -> bool:
        return self.wakeups.offer(self.key, self.body)


async def settle() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


async def test_spec_change_starts_the_next_pass_without_waiting_for_the_period() -> None:
    loop = LoopUnderTest()
    await loop.start()
    loop.body["metadata"]["generation"] = 2
    assert loop.offer()
    await settle()
    assert [generation for generation, _ in loop.seen] == [1, 2]
    await loop.stop()


async def test_manual_control_annotation_starts_the_next_pass() -> None:
    loop = LoopUnderTest()
    await loop.start()
    loop.body["metadata"]["annotations"][manual.FREEZE] = "true"
    assert loop.offer()
    await settle()
    assert len(loop.seen) == 2
    assert loop.seen[1][1] == {manual.FREEZE: "true"}
    await loop.stop()


async def test_own_status_and_engine_state_writes_wake_nothing() -> None:
    loop = LoopUnderTest()
    await loop.start()
    loop.body["status"] = {"observedGeneration": 1, "healthyPlacements": "2/2"}
    loop.body["metadata"]["annotations"]["crossfade.dev/engine-state"] = "{}"
    assert not loop.offer()
    await settle()
    assert len(loop.seen) == 1
    await loop.stop()


async def test_change_during_a_pass_is_acted_on_right_after_it() -> None:
    loop = LoopUnderTest()
    original = loop.one_pass

    async def pass_that_sees_a_change_arrive() -> float:
        period = await original()
        if len(loop.seen) == 1:  # the watch event lands while the first pass runs
            loop.body["metadata"]["generation"] = 2
            loop.offer()
        return period

    loop.one_pass = pass_that_sees_a_change_arrive  # type: ignore[method-assign]
    await loop.start(passes=2)
    await settle()  # and no third pass: the second one started from generation 2
    assert [generation for generation, _ in loop.seen] == [1, 2]
    await loop.stop()


async def test_stop_ends_the_sleep_and_forgets_the_pool() -> None:
    loop = LoopUnderTest()
    await loop.start()
    await loop.stop()
    assert len(loop.seen) == 1
    loop.body["metadata"]["generation"] = 2
    assert not loop.offer()  # no loop left to wake


async def test_sleeping_loops_own_no_task_and_one_stop_watch_serves_them_all() -> None:
    wakeups = PoolWakeups(stop_poll_s=STOP_POLL_S)
    loops = [LoopUnderTest(wakeups, key=f"ns/chat-{index}") for index in range(20)]
    before = len(asyncio.all_tasks())
    for loop in loops:
        await loop.start()
    # Each loop runs in its own task (kopf's daemon task here); sleeping adds only the watch.
    assert len(asyncio.all_tasks()) - before == len(loops) + 1
    for loop in loops:
        await loop.stop()
    await asyncio.sleep(STOP_POLL_S * 3)  # the watch's next look finds no loop asleep
    assert len(asyncio.all_tasks()) == before


async def test_stopped_loop_ends_within_a_stop_poll_of_its_hour_long_sleep() -> None:
    loop = LoopUnderTest()
    await loop.start()
    loop.stopper.set()
    assert loop.task is not None
    # An hour-long sleep: only the stop watch can end it this soon.
    await asyncio.wait_for(asyncio.shield(loop.task), timeout=STOP_POLL_S * 20)
    assert loop.task.done() and loop.task.exception() is None
