"""Inference probes on their own period: one ProbeScheduler per process, drained by each pass.

A pass that awaited its probes would last as long as the slowest endpoint (up to the probe
timeout) and probe only as often as passes run. Here every placement's inference probe is
a task of the process-wide ``ProbeScheduler`` (jittered period, per-pool and global
concurrency bounds, hard timeout) writing into an ``ObservationBuffer``; a pass only takes
what arrived since the previous one.

``on_news`` (the pool loops' ``PoolWakeups.nudge``) is called with the pool key when a
probe result may change a decision: it is not Healthy, or its outcome differs from the
previous result of the same placement. A healthy pool at steady state wakes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crossfade.engine.observations import Observations, ProbeOutcome, ProbeResult
from crossfade.probes.buffer import ObservationBuffer
from crossfade.probes.scheduler import Observation, ProbeScheduler, ProbeSpec


class ScheduledProbes:
    """The process's probe scheduler and the buffer it fills; pools get a ``PoolProbeFeed``.

    ``scheduler_options`` go to ``ProbeScheduler`` (concurrency bounds, jitter, rng, clocks).
    """

    def __init__(
        self, *, on_news: Callable[[str], object] | None = None, **scheduler_options: Any
    ) -> None:
        self.buffer = ObservationBuffer()
        self.scheduler = ProbeScheduler(
            sink=self._deliver, error_sink=self.buffer.add_error, **scheduler_options
        )
        self._on_news = on_news
        # Last probe outcome per pool key and placement: a change is news.
        self._last_outcome: dict[str, dict[str, ProbeOutcome]] = {}
        # The newest feed of each pool key. A runtime rebuilt for a new spec generation
        # takes over from the old one, whose close must then leave the probes running:
        # the new feed's first drain keeps every probe whose configuration did not change.
        self._owners: dict[str, PoolProbeFeed] = {}

    def _deliver(self, pool: str, observation: Observation) -> None:
        self.buffer.add(pool, observation)
        if self._on_news is None or not isinstance(observation, ProbeResult):
            return
        outcomes = self._last_outcome.setdefault(pool, {})
        previous = outcomes.get(observation.placement)
        outcomes[observation.placement] = observation.outcome
        if observation.outcome != ProbeOutcome.HEALTHY or previous != observation.outcome:
            self.news(pool)

    def news(self, pool: str) -> None:
        """Tell the pool's loop about news from outside the probes (a Node's readiness)."""
        if self._on_news is not None:
            self._on_news(pool)

    def feed(self, pool: str, specs: Sequence[ProbeSpec]) -> PoolProbeFeed:
        """Return the feed of ``pool`` running ``specs`` (from its first drain) and own it."""
        feed = PoolProbeFeed(self, pool=pool, specs=tuple(specs))
        self._owners[pool] = feed
        return feed

    def owns(self, feed: PoolProbeFeed) -> bool:
        return self._owners.get(feed.pool) is feed

    async def stop(self, feed: PoolProbeFeed) -> None:
        """Stop the pool's probes and drop what they buffered, if ``feed`` is the newest."""
        if not self.owns(feed):
            return
        del self._owners[feed.pool]
        await self.scheduler.remove_pool(feed.pool)
        self.buffer.forget(feed.pool)
        self._last_outcome.pop(feed.pool, None)

    async def close(self) -> None:
        """Stop every probe task (before the HTTP session they use is closed)."""
        self._owners.clear()
        await self.scheduler.close()


class PoolProbeFeed:
    """One pool's scheduled probes: ``drain`` once per pass, ``close`` with the runtime."""

    def __init__(self, probes: ScheduledProbes, *, pool: str, specs: tuple[ProbeSpec, ...]) -> None:
        self.pool = pool
        self.specs = specs
        self._probes = probes
        self._running = False

    async def drain(self) -> Observations:
        """Return the probe results (and probe errors) delivered since the last drain."""
        if not self._running and self._probes.owns(self):
            self._running = True
            await self._probes.scheduler.set_pool(self.pool, self.specs)
        return self._probes.buffer.drain(self.pool)

    async def close(self) -> None:
        await self._probes.stop(self)
