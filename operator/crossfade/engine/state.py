"""PoolState: what the engine remembers between decisions; round-trips through JSON."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

from crossfade.engine.ice import IceCache

STATE_SCHEMA_VERSION = 1
# Transitions older than this no longer count against maxFailoversPerHour.
FLAP_WINDOW_S = 3600


class Health(enum.StrEnum):
    """Per-placement health after hysteresis."""

    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclass
class PlacementState:
    """Memory of one placement: health counters, capacity last seen, traffic history."""

    health: Health = Health.UNKNOWN
    reason: str = "AwaitingProbes"
    message: str = "no probe result yet"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_probe_at: float | None = None
    latency_ms: float | None = None
    unhealthy_since: float | None = None
    healthy_since: float | None = None
    last_transition_at: float | None = None
    ready_nodes: int | None = None
    total_nodes: int | None = None
    ready_accelerators: int | None = None
    capacity_at: float | None = None
    ready_since: float | None = None
    desired: int | None = None
    requested_at: float | None = None
    scale_up_at: float | None = None  # when the engine last asked for more nodes
    ready_before_scale_up: int | None = None  # ready nodes when that boot grace began
    provider_error: str | None = None
    provider_error_at: float | None = None
    last_provider_at: float | None = None
    last_seen_at: float | None = None
    failed_at: float | None = None  # traffic left it because it failed; failback is gated
    last_needed_at: float | None = None  # carried traffic or was planned capacity
    # Whether it was needed at the last decision. While needed, last_needed_at moves every
    # decision and is not persisted; this flag is, so a restarted engine knows the
    # placement was needed until (at least) the restart and keeps the scale-down delay.
    needed: bool = False

    def copy(self) -> PlacementState:
        # No slots on purpose: copying __dict__ is the cheapest copy Python offers, and
        # decide copies every placement's state once per call.
        clone = object.__new__(PlacementState)
        clone.__dict__.update(self.__dict__)
        return clone

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            out[_camel(item.name)] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlacementState:
        kwargs: dict[str, Any] = {}
        for item in fields(cls):
            key = _camel(item.name)
            if key in data:
                kwargs[item.name] = data[key]
        if "health" in kwargs:
            kwargs["health"] = Health(kwargs["health"])
        return cls(**kwargs)


@dataclass
class PoolState:
    """Everything ``decide`` carries from one call to the next for one pool."""

    placements: dict[str, PlacementState] = field(default_factory=dict)
    weights: dict[str, int] | None = None
    last_good_weights: dict[str, int] | None = None
    ice: IceCache = field(default_factory=IceCache)
    transitions: list[float] = field(default_factory=list)  # start times, newest last
    shift_from: str | None = None
    shift_to: str | None = None
    shift_reason: str | None = None
    shift_started_at: float | None = None
    last_step_at: float | None = None
    started_at: float | None = None
    fail_static: bool = False
    fail_static_reason: str | None = None
    flap_guarded: bool = False
    last_proposal: str | None = None  # manual / paused: what was last recommended
    decisions: int = 0

    def copy(self) -> PoolState:
        clone = object.__new__(PoolState)
        clone.__dict__.update(self.__dict__)
        clone.placements = {name: p.copy() for name, p in self.placements.items()}
        clone.weights = dict(self.weights) if self.weights is not None else None
        clone.last_good_weights = (
            dict(self.last_good_weights) if self.last_good_weights is not None else None
        )
        clone.ice = self.ice.copy()
        clone.transitions = list(self.transitions)
        return clone

    def placement(self, name: str) -> PlacementState:
        found = self.placements.get(name)
        if found is None:
            found = self.placements[name] = PlacementState()
        return found

    def active_placement(self, priority_order: tuple[str, ...]) -> str | None:
        """The placement holding most traffic (ties: the higher priority), None before start."""
        if not self.weights:
            return None
        rank = {name: index for index, name in enumerate(priority_order)}
        best = min(
            (name for name, w in self.weights.items() if w > 0),
            key=lambda name: (-self.weights[name] if self.weights else 0, rank.get(name, 99)),
            default=None,
        )
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": STATE_SCHEMA_VERSION,
            "placements": {name: p.to_dict() for name, p in sorted(self.placements.items())},
            "weights": self.weights,
            "lastGoodWeights": self.last_good_weights,
            "ice": self.ice.to_dict(),
            "transitions": list(self.transitions),
            "shiftFrom": self.shift_from,
            "shiftTo": self.shift_to,
            "shiftReason": self.shift_reason,
            "shiftStartedAt": self.shift_started_at,
            "lastStepAt": self.last_step_at,
            "startedAt": self.started_at,
            "failStatic": self.fail_static,
            "failStaticReason": self.fail_static_reason,
            "flapGuarded": self.flap_guarded,
            "lastProposal": self.last_proposal,
            "decisions": self.decisions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolState:
        version = data.get("schemaVersion", STATE_SCHEMA_VERSION)
        if version != STATE_SCHEMA_VERSION:
            raise ValueError(f"unsupported PoolState schemaVersion {version}")
        weights = data.get("weights")
        good = data.get("lastGoodWeights")
        return cls(
            placements={
                name: PlacementState.from_dict(raw)
                for name, raw in data.get("placements", {}).items()
            },
            weights={k: int(v) for k, v in weights.items()} if weights is not None else None,
            last_good_weights={k: int(v) for k, v in good.items()} if good is not None else None,
            ice=IceCache.from_dict(data.get("ice", {})),
            transitions=[float(t) for t in data.get("transitions", [])],
            shift_from=data.get("shiftFrom"),
            shift_to=data.get("shiftTo"),
            shift_reason=data.get("shiftReason"),
            shift_started_at=data.get("shiftStartedAt"),
            last_step_at=data.get("lastStepAt"),
            started_at=data.get("startedAt"),
            fail_static=bool(data.get("failStatic", False)),
            fail_static_reason=data.get("failStaticReason"),
            flap_guarded=bool(data.get("flapGuarded", False)),
            last_proposal=data.get("lastProposal"),
            decisions=int(data.get("decisions", 0)),
        )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
