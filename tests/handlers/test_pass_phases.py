"""Pool passes are spread over the period, not run in step.

Every pool loop starts at once when the operator starts. Sleeping one plain period after
each pass kept them in step for good, so every pool described its node groups in the same
second and overran the shared cloud API buckets. The loops below run on a frozen clock and
record the sleep each asks for; no wall time is waited or asserted.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from typing import Any

import pytest
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter

from crossfade.handlers.wakeup import (
    PoolWakeups,
    StopFlag,
    phase_offset_s,
    phased_delay_s,
    run_pool_loop,
)

from .fakes import pool_body

PERIOD_S = 10.0
NOW = 1000.0
POOLS = 1000


class RecordingWakeups(PoolWakeups):
    """Records the sleep each loop asks for and stops the loop instead of sleeping."""

    def __init__(self, stopper: FlagSetter[Any]) -> None:
        super().__init__()
        self.asked: dict[str, float] = {}
        self._stopper = stopper

    async def sleep(self, key: str, period_s: float, *, stopped: StopFlag) -> bool:
        self.asked[key] = period_s
        self._stopper.set()
        return False


async def one_pass_then_sleep(key: str) -> float:
    stopper: FlagSetter[Any] = FlagSetter()
    wakeups = RecordingWakeups(stopper)

    async def one_pass() -> float:
        return PERIOD_S

    await run_pool_loop(
        key,
        body=pool_body({"placements": []}, generation=1),
        stopped=AsyncFlagWaiter(stopper),
        wakeups=wakeups,
        one_pass=one_pass,
        after_pass=lambda: None,
        clock=lambda: NOW,
    )
    return wakeups.asked[key]


async def test_pools_whose_passes_end_together_next_run_in_their_own_slots() -> None:
    keys = [f"fleet/pool-{index:04d}" for index in range(POOLS)]
    delays = await asyncio.gather(*(one_pass_then_sleep(key) for key in keys))
    next_second = Counter(int((NOW + delay) % PERIOD_S) for delay in delays)
    # In step, all 1000 would come back in the same second; spread, each second of the
    # period gets about a tenth of them.
    assert len(next_second) == int(PERIOD_S)
    assert max(next_second.values()) < POOLS * 0.15
    for key, delay in zip(keys, delays, strict=True):
        assert PERIOD_S / 2 <= delay < 1.5 * PERIOD_S
        assert (NOW + delay) % PERIOD_S == pytest.approx(phase_offset_s(key, PERIOD_S), abs=1e-6)


def test_a_pool_keeps_its_slot_from_pass_to_pass() -> None:
    key = "fleet/pool-0298"
    slot = phase_offset_s(key, PERIOD_S)
    now = NOW
    for pass_s in (0.1, 3.0, 4.9, 0.0, 7.5):
        now += phased_delay_s(key, PERIOD_S, now=now)
        assert now % PERIOD_S == pytest.approx(slot, abs=1e-6)
        now += pass_s  # the pass itself takes a while


def test_slot_is_the_crc32_of_the_key_so_a_restart_keeps_it() -> None:
    # Not Python's str hash, which is salted per process (PYTHONHASHSEED).
    assert phase_offset_s("fleet/pool-0000", PERIOD_S) == pytest.approx(
        zlib.crc32(b"fleet/pool-0000") / 2**32 * PERIOD_S
    )
