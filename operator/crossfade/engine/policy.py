"""The engine's flat, typed view of an InferencePool spec (built from the API model or YAML).

The engine reads policy from this view only, so it stays independent of how the API models
nest their fields; ``policy_from_spec`` accepts the pydantic spec, a camelCase mapping (as in
a manifest or scenario file) or a snake_case mapping.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crossfade.api import InferencePoolSpec, Role, TrafficMode

__all__ = [
    "PlacementPolicy",
    "PoolPolicy",
    "Role",
    "SpecLike",
    "TrafficMode",
    "policy_from_spec",
]

# Defaults mirror the API's defaults (issue 4); the API model's values win when present.
DEFAULT_PERIOD_S = 10
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 2
DEFAULT_INITIAL_DELAY_S = 60
DEFAULT_TOLERATION_S = 30
DEFAULT_FAILBACK_DELAY_S = 600
DEFAULT_WARM_STANDBY_NODES = 1
DEFAULT_MAX_FAILOVERS_PER_HOUR = 4
DEFAULT_ICE_BACKOFF_S = 300
DEFAULT_STEP_PERCENT = 25
DEFAULT_MIN_READY_PERCENT = 50
DEFAULT_ACCELERATORS_PER_NODE = 1


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    """One placement as the engine needs it."""

    name: str
    priority: int
    role: Role
    min_nodes: int
    max_nodes: int
    accelerators_per_node: int
    weight: int | None = None  # relative share in Weighted mode; None = equal shares
    max_accelerators: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_accelerators", self.max_nodes * self.accelerators_per_node)

    def nodes_for(self, accelerators: int) -> int:
        """Nodes needed to offer ``accelerators``, clamped to [min_nodes, max_nodes]."""
        wanted = math.ceil(accelerators / self.accelerators_per_node) if accelerators > 0 else 0
        return max(self.min_nodes, min(self.max_nodes, wanted))


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """Everything ``decide`` needs from the spec, already defaulted and ordered."""

    placements: tuple[PlacementPolicy, ...]  # highest priority first
    period_s: int = DEFAULT_PERIOD_S
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    initial_delay_s: int = DEFAULT_INITIAL_DELAY_S
    min_ready_percent: int = DEFAULT_MIN_READY_PERCENT
    min_allocatable_accelerators: int = 0
    mode: TrafficMode = TrafficMode.ACTIVE_PASSIVE
    step_percent: int = DEFAULT_STEP_PERCENT
    automatic: bool = True
    toleration_s: int = DEFAULT_TOLERATION_S
    failback_delay_s: int = DEFAULT_FAILBACK_DELAY_S
    warm_standby_nodes: int = DEFAULT_WARM_STANDBY_NODES
    max_failovers_per_hour: int = DEFAULT_MAX_FAILOVERS_PER_HOUR
    ice_backoff_s: int = DEFAULT_ICE_BACKOFF_S
    paused: bool = False
    demand_accelerators: int = 0  # 0 = the preferred placement's full size
    # Derived once (decide runs thousands of times per second): names by priority.
    names: tuple[str, ...] = field(init=False, default=())
    rank: Mapping[str, int] = field(init=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.placements:
            raise ValueError("a pool needs at least one placement")
        if self.demand_accelerators <= 0:
            object.__setattr__(self, "demand_accelerators", self.placements[0].max_accelerators)
        object.__setattr__(self, "names", tuple(p.name for p in self.placements))
        object.__setattr__(self, "rank", {name: index for index, name in enumerate(self.names)})

    @property
    def preferred(self) -> PlacementPolicy:
        return self.placements[0]

    def placement(self, name: str) -> PlacementPolicy:
        for candidate in self.placements:
            if candidate.name == name:
                return candidate
        raise KeyError(name)


def _get(source: Any, *names: str, default: Any = None) -> Any:
    """Read the first present field among ``names`` from a model or mapping."""
    if source is None:
        return default
    for name in names:
        if isinstance(source, Mapping):
            if name in source and source[name] is not None:
                return source[name]
        else:
            value = getattr(source, name, None)
            if value is not None:
                return value
    return default


def _int(source: Any, *names: str, default: int) -> int:
    return int(_get(source, *names, default=default))


def _enum_value(value: Any) -> str:
    return str(value.value if isinstance(value, enum.Enum) else value)


def _placement(raw: Any) -> PlacementPolicy:
    nodes = _get(raw, "nodes")
    accelerator = _get(raw, "accelerator")
    min_nodes = _int(nodes, "min", "min_nodes", "minNodes", default=0)
    max_nodes = _int(nodes, "max", "max_nodes", "maxNodes", default=max(min_nodes, 1))
    weight = _get(raw, "weight")
    return PlacementPolicy(
        name=str(_get(raw, "name")),
        priority=_int(raw, "priority", default=0),
        role=Role(_enum_value(_get(raw, "role", default=Role.STANDBY))),
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        accelerators_per_node=max(
            1,
            _int(
                accelerator,
                "per_node",
                "perNode",
                "count",
                default=DEFAULT_ACCELERATORS_PER_NODE,
            ),
        ),
        weight=int(weight) if weight is not None else None,
    )


SpecLike = InferencePoolSpec | Mapping[str, Any]


def policy_from_spec(spec: SpecLike | PoolPolicy) -> PoolPolicy:
    """Build the engine's view from an InferencePoolSpec model or a spec mapping."""
    if isinstance(spec, PoolPolicy):
        return spec
    if isinstance(spec, InferencePoolSpec):
        return _policy_from_model(spec)
    placements = tuple(
        sorted(
            (_placement(raw) for raw in _get(spec, "placements", default=())),
            key=lambda p: (-p.priority, p.name),
        )
    )
    health = _get(spec, "health_check", "healthCheck")
    inference = _get(health, "inference")
    nodes = _get(health, "nodes")
    traffic = _get(spec, "traffic")
    failover = _get(spec, "failover")
    return PoolPolicy(
        placements=placements,
        period_s=max(
            1, _int(inference, "period_seconds", "periodSeconds", default=DEFAULT_PERIOD_S)
        ),
        failure_threshold=max(
            1,
            _int(
                inference,
                "failure_threshold",
                "failureThreshold",
                default=DEFAULT_FAILURE_THRESHOLD,
            ),
        ),
        success_threshold=max(
            1,
            _int(
                inference,
                "success_threshold",
                "successThreshold",
                default=DEFAULT_SUCCESS_THRESHOLD,
            ),
        ),
        initial_delay_s=_int(
            inference,
            "initial_delay_seconds",
            "initialDelaySeconds",
            default=DEFAULT_INITIAL_DELAY_S,
        ),
        min_ready_percent=_int(
            nodes, "min_ready_percent", "minReadyPercent", default=DEFAULT_MIN_READY_PERCENT
        ),
        min_allocatable_accelerators=_int(
            nodes, "min_allocatable_accelerators", "minAllocatableAccelerators", default=0
        ),
        mode=TrafficMode(_enum_value(_get(traffic, "mode", default=TrafficMode.ACTIVE_PASSIVE))),
        step_percent=min(
            100, max(1, _int(traffic, "step_percent", "stepPercent", default=DEFAULT_STEP_PERCENT))
        ),
        automatic=bool(_get(failover, "automatic", default=True)),
        toleration_s=_int(
            failover, "toleration_seconds", "tolerationSeconds", default=DEFAULT_TOLERATION_S
        ),
        failback_delay_s=_int(
            failover,
            "failback_delay_seconds",
            "failbackDelaySeconds",
            default=DEFAULT_FAILBACK_DELAY_S,
        ),
        warm_standby_nodes=_int(
            failover,
            "warm_standby_nodes",
            "warmStandbyNodes",
            default=DEFAULT_WARM_STANDBY_NODES,
        ),
        max_failovers_per_hour=_int(
            failover,
            "max_failovers_per_hour",
            "maxFailoversPerHour",
            default=DEFAULT_MAX_FAILOVERS_PER_HOUR,
        ),
        ice_backoff_s=max(
            1,
            _int(
                failover,
                "insufficient_capacity_backoff_seconds",
                "insufficientCapacityBackoffSeconds",
                default=DEFAULT_ICE_BACKOFF_S,
            ),
        ),
        paused=bool(_get(spec, "paused", default=False)),
        demand_accelerators=_int(spec, "demand_accelerators", "demandAccelerators", default=0),
    )


def _policy_from_model(spec: InferencePoolSpec) -> PoolPolicy:
    """Typed path for the API model (the handler's case): no field-name guessing."""
    inference = spec.health_check.inference
    nodes = spec.health_check.nodes
    failover = spec.failover
    placements = tuple(
        sorted(
            (
                PlacementPolicy(
                    name=p.name,
                    priority=p.priority,
                    role=Role(p.role),
                    min_nodes=p.nodes.min,
                    max_nodes=p.nodes.max,
                    accelerators_per_node=max(1, p.accelerator.per_node),
                    weight=p.weight,
                )
                for p in spec.placements
            ),
            key=lambda p: (-p.priority, p.name),
        )
    )
    return PoolPolicy(
        placements=placements,
        period_s=inference.period_seconds,
        failure_threshold=inference.failure_threshold,
        success_threshold=inference.success_threshold,
        initial_delay_s=inference.initial_delay_seconds,
        min_ready_percent=nodes.min_ready_percent,
        min_allocatable_accelerators=nodes.min_allocatable_accelerators,
        mode=TrafficMode(spec.traffic.mode),
        step_percent=spec.traffic.step_percent,
        automatic=failover.automatic,
        toleration_s=failover.toleration_seconds,
        failback_delay_s=failover.failback_delay_seconds,
        warm_standby_nodes=failover.warm_standby_nodes,
        max_failovers_per_hour=failover.max_failovers_per_hour,
        ice_backoff_s=failover.insufficient_capacity_backoff_seconds,
        paused=spec.paused,
        demand_accelerators=spec.demand_accelerators or 0,
    )
