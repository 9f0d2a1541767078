"""TrafficRouter protocol: read and apply per-placement weights on one traffic layer."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# crossfade's own weight scale (engine/weights.py keeps WEIGHT_TOTAL = 100 as well); routers
# map it onto their layer's scale on the way out and back onto it on the way in.
CROSSFADE_WEIGHT_TOTAL = 100


class DriftPolicy(enum.StrEnum):
    """What a router does when another manager changed the weights it last wrote."""

    REASSERT = "Reassert"  # write the plan's weights again (the plan is the source of truth)
    BACK_OFF = "BackOff"  # leave the other manager's weights alone and report the drift


@dataclass(frozen=True)
class RouteReading:
    """What a traffic layer currently says, mapped back onto placements.

    ``weights`` are in crossfade's scale (sum CROSSFADE_WEIGHT_TOTAL) or None when the layer
    could not be read; ``layer_weights`` are the raw values on the layer's own scale.
    ``accepted`` is None while the layer has not reported on the latest write yet.
    ``drift`` is True when someone other than crossfade changed the weights crossfade last
    wrote; ``drift_manager`` names them when the layer records it.
    """

    weights: Mapping[str, int] | None
    accepted: bool | None
    drift: bool
    message: str
    reason: str = "Synced"
    layer_weights: Mapping[str, int] | None = None
    drift_manager: str | None = None


@dataclass(frozen=True)
class ApplyResult:
    """Outcome of one ``apply``: what the layer holds now and how many writes it took."""

    weights: Mapping[str, int]
    layer_weights: Mapping[str, int]
    changed: bool
    writes: int
    reason: str
    message: str
    drift_manager: str | None = field(default=None)


class RouterError(Exception):
    """Base of every error a router raises; SDK errors never leave a router.

    ``reason`` is a CamelCase string for the TrafficSynced condition and Events;
    ``retryable`` tells the caller whether trying again later can succeed without a change
    to the pool or the route.
    """

    reason = "RouterError"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RouterConfigError(RouterError):
    """The pool's traffic section cannot be turned into a router (missing or bad fields)."""

    reason = "InvalidTrafficConfig"


class InvalidWeightsError(RouterError):
    """The weights asked for are unsafe: all zero, negative, or for unknown placements."""

    reason = "InvalidWeights"


class RouteNotFoundError(RouterError):
    """The route (or record set) the pool names does not exist."""

    reason = "RouteNotFound"
    retryable = True  # it may be created later (GitOps sync order)


class BackendMismatchError(RouterError):
    """The route's backends do not match the pool's placements; crossfade refuses to steer."""

    reason = "BackendMismatch"


class BackendNotFoundError(RouterError):
    """A backend the route points at (Service, InferencePool) does not exist."""

    reason = "BackendNotFound"
    retryable = True


class ReferenceNotPermittedError(RouterError):
    """A cross-namespace backend is not allowed by any ReferenceGrant in its namespace."""

    reason = "RefNotPermitted"
    retryable = True


class RouteLimitExceededError(RouterError):
    """The layer's API limits (number of backends, weight range) would be exceeded."""

    reason = "RouteLimitExceeded"


class WeightsDriftedError(RouterError):
    """Another manager changed the weights and the drift policy says to back off."""

    reason = "WeightsDrifted"

    def __init__(self, message: str, *, manager: str | None) -> None:
        super().__init__(message)
        self.manager = manager


class RouterConflictError(RouterError):
    """Concurrent writers kept changing the route; the write did not land after retries."""

    reason = "WriteConflict"
    retryable = True


class RouterPermissionDeniedError(RouterError):
    """The operator's identity may not read or write the route."""

    reason = "PermissionDenied"


class RouterUnavailableError(RouterError):
    """The layer's API could not be reached or answered with a server error."""

    reason = "RouterUnavailable"
    retryable = True


@runtime_checkable
class TrafficRouter(Protocol):
    """One traffic layer steered for one pool.

    Error contract: both methods raise only ``RouterError`` subclasses. ``read`` reports a
    missing route, a mismatch or a refused reference as an error, never as empty weights.
    ``apply`` is idempotent: applying the weights the layer already holds makes no write
    (``writes == 0``); it never writes weights that sum to zero (``InvalidWeightsError``).
    """

    @property
    def name(self) -> str:
        """Return a short human name of the target, such as ``httproute/ns/chat``."""
        ...

    async def read(self) -> RouteReading:
        """Return the layer's current weights, acceptance and drift."""
        ...

    async def apply(self, weights: Mapping[str, int]) -> ApplyResult:
        """Make the layer hold ``weights`` (placement -> crossfade-scale weight)."""
        ...


def validate_weights(
    weights: Mapping[str, int], *, placements: frozenset[str] | set[str]
) -> dict[str, int]:
    """Return ``weights`` as a dict, or raise InvalidWeightsError when unsafe to write."""
    unknown = sorted(set(weights) - set(placements))
    if unknown:
        raise InvalidWeightsError(f"weights name unknown placements: {', '.join(unknown)}")
    negative = sorted(name for name, value in weights.items() if value < 0)
    if negative:
        raise InvalidWeightsError(f"negative weights for: {', '.join(negative)}")
    if sum(weights.values()) <= 0:
        raise InvalidWeightsError(
            "refusing to write weights that sum to zero (no traffic anywhere)"
        )
    return {name: weights.get(name, 0) for name in sorted(placements)}


def to_layer_scale(weights: Mapping[str, int], *, max_weight: int) -> dict[str, int]:
    """Map non-negative weights onto 0..max_weight keeping ratios (exactly when possible).

    A placement with a non-zero weight never maps to zero, so a small share is not lost.
    """
    total = sum(weights.values())
    if total <= 0:
        raise InvalidWeightsError("refusing to scale weights that sum to zero")
    factor = max_weight // total
    if factor >= 1:
        return {name: value * factor for name, value in weights.items()}
    top = max(weights.values())
    return {
        name: 0 if value == 0 else max(1, value * max_weight // top)
        for name, value in weights.items()
    }


def to_crossfade_scale(
    layer_weights: Mapping[str, int], *, total: int = CROSSFADE_WEIGHT_TOTAL
) -> dict[str, int]:
    """Map layer weights onto crossfade's scale (sum ``total``) by largest remainder.

    All-zero layer weights map to all zeros: the caller reports that, it is not hidden.
    """
    layer_total = sum(layer_weights.values())
    if layer_total <= 0:
        return dict.fromkeys(layer_weights, 0)
    quotas = {name: value * total / layer_total for name, value in layer_weights.items()}
    result = {name: int(quota) for name, quota in quotas.items()}
    remainder = total - sum(result.values())
    by_fraction = sorted(quotas, key=lambda name: (-(quotas[name] - result[name]), name))
    for name in by_fraction[:remainder]:
        result[name] += 1
    return result


@dataclass(frozen=True)
class TrafficSynced:
    """The pool's TrafficSynced condition as a router sees it (status True/False/Unknown)."""

    status: str
    reason: str
    message: str


def traffic_synced(outcome: RouteReading | RouterError) -> TrafficSynced:
    """Turn a reading (or the error that replaced it) into the TrafficSynced condition."""
    if isinstance(outcome, RouterError):
        return TrafficSynced(status="False", reason=outcome.reason, message=outcome.message)
    if outcome.drift:
        return TrafficSynced(status="False", reason=outcome.reason, message=outcome.message)
    if outcome.accepted is None:
        return TrafficSynced(status="Unknown", reason=outcome.reason, message=outcome.message)
    status = "True" if outcome.accepted else "False"
    return TrafficSynced(status=status, reason=outcome.reason, message=outcome.message)
