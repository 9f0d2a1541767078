"""Typed actions a decision asks the imperative shell to carry out, idempotently."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

# One definition of the condition vocabulary: the API's (the CRD documents these values).
from crossfade.api.fields import ConditionStatus as ConditionStatus
from crossfade.api.fields import ConditionType as ConditionType


class EventType(enum.StrEnum):
    """Kubernetes Event types."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class ScalePlacement:
    """Set the desired node count of one placement (providers use an idempotency token)."""

    placement: str
    desired: int
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class SetWeights:
    """Write per-placement traffic weights (sum WEIGHT_TOTAL, never all zero) to every layer."""

    weights: Mapping[str, int]
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class RecordTransition:
    """Append a traffic transition to status.history (newest first, bounded)."""

    at: float
    from_placement: str | None
    to_placement: str | None
    reason: str
    message: str
    duration_seconds: int = 0


@dataclass(frozen=True, slots=True)
class EmitEvent:
    """Emit a Kubernetes Event on the pool."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class SetCondition:
    """Set one status condition (the handler keeps lastTransitionTime when status is equal)."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


Action = ScalePlacement | SetWeights | RecordTransition | EmitEvent | SetCondition

# Actions that change the world; the others only report. With ``automatic: false`` or
# ``paused`` the engine moves effects to ``Decision.proposed`` instead of ``Decision.plan``.
EFFECT_TYPES: tuple[type, ...] = (ScalePlacement, SetWeights)


def is_effect(action: Action) -> bool:
    """True for actions that change cloud capacity or traffic."""
    return isinstance(action, EFFECT_TYPES)
