"""Collects observations per pool between two decisions and hands them over as ``Observations``."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from crossfade.engine.observations import (
    NodeObservation,
    Observations,
    ProbeResult,
    ProviderObservation,
)
from crossfade.probes.scheduler import Observation

MAX_PER_KIND = 256  # per pool and kind: a stalled consumer costs bounded memory


@dataclass(slots=True)
class _PoolBuffer:
    probes: deque[ProbeResult] = field(default_factory=lambda: deque(maxlen=MAX_PER_KIND))
    nodes: deque[NodeObservation] = field(default_factory=lambda: deque(maxlen=MAX_PER_KIND))
    providers: deque[ProviderObservation] = field(
        default_factory=lambda: deque(maxlen=MAX_PER_KIND)
    )
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_PER_KIND))


class ObservationBuffer:
    """A ProbeScheduler sink (``add`` / ``add_error``) that the handler ``drain``s."""

    def __init__(self) -> None:
        self._pools: dict[str, _PoolBuffer] = {}

    def add(self, pool: str, observation: Observation) -> None:
        buffer = self._pools.setdefault(pool, _PoolBuffer())
        if isinstance(observation, ProbeResult):
            buffer.probes.append(observation)
        elif isinstance(observation, NodeObservation):
            buffer.nodes.append(observation)
        else:
            buffer.providers.append(observation)

    def add_error(self, pool: str, message: str) -> None:
        self._pools.setdefault(pool, _PoolBuffer()).errors.append(message)

    def pending(self, pool: str) -> int:
        buffer = self._pools.get(pool)
        if buffer is None:
            return 0
        return len(buffer.probes) + len(buffer.nodes) + len(buffer.providers)

    def drain(self, pool: str) -> Observations:
        """Everything observed for ``pool`` since the last drain (oldest first), then forget it."""
        buffer = self._pools.pop(pool, None)
        if buffer is None:
            return Observations()
        return Observations(
            probes=tuple(buffer.probes),
            nodes=tuple(buffer.nodes),
            providers=tuple(buffer.providers),
            errors=tuple(buffer.errors),
        )

    def forget(self, pool: str) -> None:
        self._pools.pop(pool, None)
