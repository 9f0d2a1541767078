"""The probe scheduler: periods with jitter, hard timeouts, bounded concurrency, no task leaks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from crossfade.engine.observations import ProbeOutcome, ProbeResult
from crossfade.probes.buffer import ObservationBuffer
from crossfade.probes.scheduler import Observation, ProbeScheduler, ProbeSpec

WAIT_S = 10.0  # upper bound for something that normally takes milliseconds


@dataclass
class Recorder:
    """A sink that lets a test wait for a number of observations of one pool."""

    seen: list[tuple[str, Observation]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def sink(self, pool: str, observation: Observation) -> None:
        self.seen.append((pool, observation))
        self.changed.set()

    def error_sink(self, pool: str, message: str) -> None:
        self.errors.append((pool, message))
        self.changed.set()

    def of(self, pool: str) -> list[Observation]:
        return [obs for p, obs in self.seen if p == pool]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def result(placement: str, outcome: ProbeOutcome = ProbeOutcome.HEALTHY) -> ProbeResult:
    return ProbeResult(placement=placement, at=0.0, outcome=outcome)


def healthy(placement: str) -> Callable[[], Awaitable[Observation]]:
    async def run() -> Observation:
        return result(placement)

    return run


def failing(at: float, reason: str) -> Observation:
    return ProbeResult(placement="p", at=at, outcome=ProbeOutcome.FAILING, detail=reason)


@dataclass
class Gate:
    """A probe body that blocks until released, counting how many run at once."""

    running: int = 0
    peak: int = 0
    started: int = 0
    cancelled: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    recorder: Recorder | None = None  # woken on every start and end

    def _changed(self) -> None:
        if self.recorder is not None:
            self.recorder.changed.set()

    def probe(self, placement: str) -> Callable[[], Awaitable[Observation]]:
        async def run() -> Observation:
            self.running += 1
            self.started += 1
            self.peak = max(self.peak, self.running)
            self._changed()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.running -= 1
                self._changed()
            return result(placement)

        return run


async def test_every_probe_delivers_observations_on_its_period() -> None:
    recorder = Recorder()
    async with ProbeScheduler(sink=recorder.sink) as scheduler:
        await scheduler.set_pool(
            "pool-a",
            [
                ProbeSpec("fast", period_s=0.01, timeout_s=1, run=healthy("a1")),
                ProbeSpec("other", period_s=0.01, timeout_s=1, run=healthy("a2")),
            ],
        )
        await recorder.wait(lambda: len(recorder.of("pool-a")) >= 10)
    placements = {obs.placement for obs in recorder.of("pool-a")}
    assert placements == {"a1", "a2"}


async def test_jitter_spreads_first_run_and_keeps_periods_within_bounds() -> None:
    delays: list[float] = []
    enough = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) >= 50:
            enough.set()
            await asyncio.Event().wait()  # park until cancelled
        await asyncio.sleep(0)

    def monotonic() -> float:
        return 0.0  # fake time stands still: each run takes no time

    scheduler = ProbeScheduler(
        sink=lambda _p, _o: None,
        jitter_fraction=0.2,
        rng=random.Random(7),
        sleep=fake_sleep,
        monotonic=monotonic,
    )
    await scheduler.set_pool("p", [ProbeSpec("x", period_s=10.0, timeout_s=1, run=healthy("x"))])
    await asyncio.wait_for(enough.wait(), WAIT_S)
    await scheduler.close()
    first, periods = delays[0], delays[1:]
    assert 0.0 <= first <= 10.0
    assert all(8.0 <= d <= 12.0 for d in periods), periods
    assert len({round(d, 6) for d in periods}) > 10  # jittered, not constant


async def test_hung_probe_is_cut_at_its_hard_timeout() -> None:
    recorder = Recorder()
    gate = Gate(recorder=recorder)
    async with ProbeScheduler(sink=recorder.sink, error_sink=recorder.error_sink) as scheduler:
        await scheduler.set_pool(
            "p",
            [
                ProbeSpec(
                    "hang", period_s=0.01, timeout_s=0.05, run=gate.probe("h"), on_failure=failing
                )
            ],
        )
        await recorder.wait(lambda: len(recorder.of("p")) >= 2)
    observed = recorder.of("p")
    assert all(isinstance(o, ProbeResult) and o.outcome is ProbeOutcome.FAILING for o in observed)
    assert all("Timeout" in o.detail for o in observed if isinstance(o, ProbeResult))
    assert gate.cancelled >= 2 and gate.running == 0
    assert recorder.errors and recorder.errors[0][1].startswith("hang: Timeout")


async def test_raising_probe_reports_and_keeps_running() -> None:
    recorder = Recorder()
    calls = {"n": 0}

    async def flaky() -> Observation:
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("probe bug")
        return result("f")

    async with ProbeScheduler(sink=recorder.sink, error_sink=recorder.error_sink) as scheduler:
        await scheduler.set_pool("p", [ProbeSpec("flaky", period_s=0.01, timeout_s=1, run=flaky)])
        await recorder.wait(lambda: len(recorder.of("p")) >= 3)
    assert any("ProbeError: RuntimeError" in message for _, message in recorder.errors)


async def test_pool_with_hung_endpoints_cannot_starve_other_pools() -> None:
    recorder = Recorder()
    gate = Gate(recorder=recorder)
    async with ProbeScheduler(
        sink=recorder.sink, max_concurrency=4, per_pool_concurrency=2
    ) as scheduler:
        hung = [
            ProbeSpec(f"h{i}", period_s=0.01, timeout_s=60, run=gate.probe(f"h{i}"))
            for i in range(10)
        ]
        await scheduler.set_pool("hung", hung)
        await recorder.wait(lambda: gate.running == 2)
        await scheduler.set_pool(
            "ok", [ProbeSpec("ok", period_s=0.01, timeout_s=1, run=healthy("ok"))]
        )
        await recorder.wait(lambda: len(recorder.of("ok")) >= 5)
        assert gate.peak == 2  # the hung pool never held more than its share
        assert recorder.of("hung") == []
        gate.release.set()
        await recorder.wait(lambda: len(recorder.of("hung")) >= 10)


async def test_global_limit_bounds_concurrency_across_pools() -> None:
    recorder = Recorder()
    gate = Gate(recorder=recorder)
    async with ProbeScheduler(
        sink=recorder.sink, max_concurrency=3, per_pool_concurrency=2
    ) as scheduler:
        for pool in ("a", "b", "c"):
            await scheduler.set_pool(
                pool,
                [
                    ProbeSpec(f"{pool}{i}", period_s=0.01, timeout_s=60, run=gate.probe(pool))
                    for i in range(4)
                ],
            )
        await recorder.wait(lambda: gate.running == 3)
        for _ in range(20):
            await asyncio.sleep(0)  # give any slot leak a chance to show
        assert gate.peak == 3
        gate.release.set()
        await recorder.wait(lambda: {p for p, _ in recorder.seen} == {"a", "b", "c"})


async def test_changing_and_removing_pools_leaks_no_task() -> None:
    recorder = Recorder()
    gate = Gate(recorder=recorder)
    baseline = len(asyncio.all_tasks())
    scheduler = ProbeScheduler(sink=recorder.sink)
    await scheduler.set_pool(
        "p",
        [
            ProbeSpec("keep", period_s=0.01, timeout_s=1, run=healthy("k"), fingerprint=1),
            ProbeSpec("drop", period_s=0.01, timeout_s=60, run=gate.probe("d"), fingerprint=1),
            ProbeSpec("edit", period_s=0.01, timeout_s=1, run=healthy("e"), fingerprint=1),
        ],
    )
    await recorder.wait(lambda: gate.running == 1)
    before = {t.get_name(): t for t in scheduler.tasks()}
    await scheduler.set_pool(
        "p",
        [
            ProbeSpec("keep", period_s=0.01, timeout_s=1, run=healthy("k"), fingerprint=1),
            ProbeSpec("edit", period_s=0.01, timeout_s=1, run=healthy("e"), fingerprint=2),
            ProbeSpec("new", period_s=0.01, timeout_s=1, run=healthy("n"), fingerprint=1),
        ],
    )
    after = {t.get_name(): t for t in scheduler.tasks()}
    assert before["probe[p/drop]"].done() and gate.cancelled == 1 and gate.running == 0
    assert after["probe[p/keep]"] is before["probe[p/keep]"]  # unchanged: same task
    assert after["probe[p/edit]"] is not before["probe[p/edit]"]  # changed: replaced
    assert before["probe[p/edit]"].done()
    assert set(after) == {"probe[p/keep]", "probe[p/edit]", "probe[p/new]"}
    await scheduler.set_pool("q", [ProbeSpec("x", period_s=0.01, timeout_s=1, run=healthy("x"))])
    assert scheduler.task_count() == 4

    await scheduler.remove_pool("p")
    assert scheduler.pools() == {"q": ["x"]}
    assert all(t.done() for t in after.values())
    await scheduler.close()
    assert scheduler.task_count() == 0
    assert len(asyncio.all_tasks()) == baseline
    with pytest.raises(RuntimeError):
        await scheduler.set_pool("p", [])


async def test_duplicate_names_and_bad_periods_are_refused() -> None:
    async with ProbeScheduler(sink=lambda _p, _o: None) as scheduler:
        spec = ProbeSpec("x", period_s=1, timeout_s=1, run=healthy("x"))
        with pytest.raises(ValueError):
            await scheduler.set_pool("p", [spec, spec])
    with pytest.raises(ValueError):
        ProbeSpec("x", period_s=0, timeout_s=1, run=healthy("x"))


async def test_buffer_drains_observations_per_pool_as_engine_input() -> None:
    buffer = ObservationBuffer()
    enough = asyncio.Event()

    def sink(pool: str, observation: Observation) -> None:
        buffer.add(pool, observation)
        if buffer.pending("p") >= 3:
            enough.set()

    async with ProbeScheduler(sink=sink, error_sink=buffer.add_error) as scheduler:
        await scheduler.set_pool(
            "p", [ProbeSpec("x", period_s=0.01, timeout_s=1, run=healthy("x"))]
        )
        await asyncio.wait_for(enough.wait(), WAIT_S)
    buffer.add_error("p", "x: Timeout")
    drained = buffer.drain("p")
    assert len(drained.probes) >= 3 and drained.probes_for("x")
    assert drained.errors == ("x: Timeout",)
    assert buffer.drain("p").probes == ()
