"""Immutable observations the imperative shell hands to the engine (probes, nodes, clouds)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class ProbeOutcome(enum.StrEnum):
    """What one inference probe saw."""

    HEALTHY = "Healthy"
    OVERLOADED = "Overloaded"  # answered, but slowly or with 429/503: alive, at its limit
    FAILING = "Failing"


class ProviderErrorKind(enum.StrEnum):
    """Typed cloud error classes (providers map vendor codes onto these)."""

    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    THROTTLED = "Throttled"
    NOT_FOUND = "NotFound"
    PERMISSION_DENIED = "PermissionDenied"
    UNAVAILABLE = "ProviderUnavailable"
    INVALID_REQUEST = "InvalidRequest"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One inference probe of one placement, taken at ``at`` (epoch seconds)."""

    placement: str
    at: float
    outcome: ProbeOutcome
    latency_ms: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NodeObservation:
    """Node readiness and allocatable accelerators of one placement, read from its cluster."""

    placement: str
    at: float
    ready_nodes: int
    total_nodes: int
    allocatable_accelerators: int
    not_ready: int = 0
    cordoned: int = 0


@dataclass(frozen=True, slots=True)
class ProviderObservation:
    """What the cloud API says about one placement's node group, or the error it gave."""

    placement: str
    at: float
    desired: int | None = None
    ready: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    updating: bool = False
    error: ProviderErrorKind | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class TrafficObservation:
    """What the traffic layer currently holds; ``weights`` is None when it could not be read."""

    at: float
    weights: Mapping[str, int] | None
    accepted: bool | None = None
    drift: bool = False


@dataclass(frozen=True, slots=True)
class Observations:
    """Everything observed since the previous decision, for one pool.

    Several probe results per placement are allowed (oldest first or in any order); the
    engine counts each result newer than the last one it consumed exactly once.
    """

    probes: tuple[ProbeResult, ...] = ()
    nodes: tuple[NodeObservation, ...] = ()
    providers: tuple[ProviderObservation, ...] = ()
    traffic: TrafficObservation | None = None
    errors: tuple[str, ...] = field(default=())  # observer-side failures, for evidence

    def probes_for(self, placement: str) -> list[ProbeResult]:
        """Probe results of one placement, oldest first."""
        return sorted((p for p in self.probes if p.placement == placement), key=_at)

    def latest_nodes(self, placement: str) -> NodeObservation | None:
        """The newest node observation of one placement, if any."""
        found = [n for n in self.nodes if n.placement == placement]
        return max(found, key=_at) if found else None

    def latest_provider(self, placement: str) -> ProviderObservation | None:
        """The newest provider observation of one placement, if any."""
        found = [p for p in self.providers if p.placement == placement]
        return max(found, key=_at) if found else None


def _at(item: ProbeResult | NodeObservation | ProviderObservation) -> float:
    return item.at
