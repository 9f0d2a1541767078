"""Probe scheduler: every probe on its own jittered period, bounded concurrency, hard timeouts.

Each probe of each pool is one task. A probe holds a slot of its pool's semaphore and of the
global one while it runs, and never longer than its timeout, so a pool whose endpoints hang
can use at most its own share of slots and cannot starve the others. ``set_pool`` diffs the
new probe list against the running one (by name and fingerprint): unchanged probes keep their
task, removed or changed ones are cancelled and awaited before it returns, so no task leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from crossfade.engine.observations import NodeObservation, ProbeResult, ProviderObservation

log = logging.getLogger(__name__)

Observation = ProbeResult | NodeObservation | ProviderObservation
ObservationSink = Callable[[str, Observation], None]
ErrorSink = Callable[[str, str], None]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_PER_POOL_CONCURRENCY = 8
DEFAULT_JITTER_FRACTION = 0.1
LATENCY_SAMPLES = 10_000


class ProbeNotReadyError(Exception):
    """Raised by a probe that has nothing to report yet (e.g. its cache is still syncing)."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One periodic probe of a pool.

    ``run`` makes one observation (a fresh awaitable per call). ``on_failure(at, reason)``
    turns a timeout or an exception of ``run`` into an observation (e.g. a FAILING probe
    result), or None to report only an error string. ``fingerprint`` identifies the probe's
    configuration: a spec with the same name and fingerprint keeps its running task.
    """

    name: str
    period_s: float
    timeout_s: float
    run: Callable[[], Awaitable[Observation]] = field(compare=False)
    fingerprint: Hashable = None
    on_failure: Callable[[float, str], Observation | None] | None = field(
        default=None, compare=False
    )

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.timeout_s <= 0:
            raise ValueError(f"probe {self.name!r}: period_s and timeout_s must be positive")


@dataclass(slots=True)
class _Running:
    spec: ProbeSpec
    task: asyncio.Task[None]


class ProbeScheduler:
    """Runs the probes of many pools; ``set_pool`` / ``remove_pool`` / ``close``."""

    def __init__(
        self,
        *,
        sink: ObservationSink,
        error_sink: ErrorSink | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        per_pool_concurrency: int = DEFAULT_PER_POOL_CONCURRENCY,
        jitter_fraction: float = DEFAULT_JITTER_FRACTION,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_concurrency < 1 or per_pool_concurrency < 1 or not 0 <= jitter_fraction < 1:
            raise ValueError("concurrency limits must be >= 1 and 0 <= jitter_fraction < 1")
        self._sink = sink
        self._error_sink = error_sink
        self._global = asyncio.Semaphore(max_concurrency)
        self._per_pool_concurrency = per_pool_concurrency
        self._jitter = jitter_fraction
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._pools: dict[str, dict[str, _Running]] = {}
        self._pool_slots: dict[str, asyncio.Semaphore] = {}
        self._closed = False
        # (pool, probe, due-to-delivered seconds) of recent runs, for benchmarks and metrics
        self.delivery_latencies: deque[tuple[str, str, float]] = deque(maxlen=LATENCY_SAMPLES)
        self.runs = 0

    def pools(self) -> dict[str, list[str]]:
        return {pool: sorted(running) for pool, running in sorted(self._pools.items())}

    def task_count(self) -> int:
        return sum(1 for running in self._pools.values() for r in running.values())

    def tasks(self) -> list[asyncio.Task[None]]:
        return [r.task for running in self._pools.values() for r in running.values()]

    async def set_pool(self, pool: str, probes: Sequence[ProbeSpec]) -> None:
        """Make ``pool`` run exactly ``probes``; returns once obsolete tasks have ended."""
        if self._closed:
            raise RuntimeError("scheduler is closed")
        wanted = {spec.name: spec for spec in probes}
        if len(wanted) != len(probes):
            raise ValueError(f"pool {pool!r}: probe names must be unique")
        running = self._pools.setdefault(pool, {})
        slots = self._pool_slots.setdefault(pool, asyncio.Semaphore(self._per_pool_concurrency))
        obsolete = [
            running.pop(name)
            for name, current in list(running.items())
            if name not in wanted or wanted[name] != current.spec
        ]
        for name, spec in wanted.items():
            if name not in running:
                task = asyncio.create_task(
                    self._loop(pool, spec, slots), name=f"probe[{pool}/{name}]"
                )
                running[name] = _Running(spec=spec, task=task)
        await _cancel_all(r.task for r in obsolete)

    async def remove_pool(self, pool: str) -> None:
        """Stop every probe of ``pool`` and forget it."""
        running = self._pools.pop(pool, {})
        self._pool_slots.pop(pool, None)
        await _cancel_all(r.task for r in running.values())

    async def close(self) -> None:
        self._closed = True
        for pool in list(self._pools):
            await self.remove_pool(pool)

    async def __aenter__(self) -> ProbeScheduler:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _loop(self, pool: str, spec: ProbeSpec, slots: asyncio.Semaphore) -> None:
        # Spread first runs over one period so pools created together do not probe in step.
        await self._sleep(self._rng.uniform(0, spec.period_s))
        while True:
            due = self._monotonic()
            async with slots, self._global:  # own pool's slot first: waiting holds no global
                observation = await self._run_once(pool, spec)
            if observation is not None:
                try:
                    self._sink(pool, observation)
                except Exception:  # a faulty sink must not silently end this probe's loop
                    log.exception("observation sink raised", extra={"pool": pool})
            self.runs += 1
            self.delivery_latencies.append((pool, spec.name, self._monotonic() - due))
            jitter = self._rng.uniform(-self._jitter, self._jitter)
            next_due = due + spec.period_s * (1 + jitter)
            await self._sleep(max(0.0, next_due - self._monotonic()))

    async def _run_once(self, pool: str, spec: ProbeSpec) -> Observation | None:
        try:
            async with asyncio.timeout(spec.timeout_s):
                return await spec.run()
        except TimeoutError:
            reason = f"Timeout: no observation within {spec.timeout_s:g}s"
        except ProbeNotReadyError as exc:
            reason = f"NotReady: {type(exc).__name__} {exc}"
        except Exception as exc:  # a probe bug must not end the loop of the others
            log.exception("probe raised", extra={"pool": pool, "probe": spec.name})
            reason = f"ProbeError: {type(exc).__name__}"
        if self._error_sink is not None:
            self._error_sink(pool, f"{spec.name}: {reason}")
        if spec.on_failure is None:
            return None
        return spec.on_failure(self._wall_clock(), reason)


async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
