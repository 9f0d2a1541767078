"""Pure failover decision core: no I/O, no clock reads, no SDK imports."""

from crossfade.engine.decide import Decision, Mode, decide
from crossfade.engine.ice import IceCache
from crossfade.engine.observations import (
    NodeObservation,
    Observations,
    ProbeOutcome,
    ProbeResult,
    ProviderErrorKind,
    ProviderObservation,
    TrafficObservation,
)
from crossfade.engine.policy import PoolPolicy, policy_from_spec
from crossfade.engine.state import Health, PlacementState, PoolState
from crossfade.engine.weights import WEIGHT_TOTAL

__all__ = [
    "WEIGHT_TOTAL",
    "Decision",
    "Health",
    "IceCache",
    "Mode",
    "NodeObservation",
    "Observations",
    "PlacementState",
    "PoolPolicy",
    "PoolState",
    "ProbeOutcome",
    "ProbeResult",
    "ProviderErrorKind",
    "ProviderObservation",
    "TrafficObservation",
    "decide",
    "policy_from_spec",
]
