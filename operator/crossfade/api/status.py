"""InferencePoolStatus: what the operator observed and did (no kopf bookkeeping in here)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from crossfade.api.base import ApiModel
from crossfade.api.constants import (
    CAMEL_REASON_PATTERN,
    CONDITION_MESSAGE_MAX_CHARS,
    CONDITION_TYPE_MAX_CHARS,
    DNS_LABEL_MAX_CHARS,
    MAX_CONDITIONS,
    MAX_HISTORY_ENTRIES,
    MAX_PLACEMENTS,
    MESSAGE_MAX_CHARS,
    REASON_MAX_CHARS,
)
from crossfade.api.fields import ConditionStatus, DnsLabel, PlacementHealth

MAX_COUNT = 1_000_000
MAX_LATENCY_MS = 3_600_000
MAX_DURATION_S = 31_536_000
HEALTHY_SUMMARY_MAX_CHARS = 16
HEALTHY_SUMMARY_PATTERN = r"^[0-9]+/[0-9]+$"


class Condition(ApiModel):
    """A metav1.Condition (Ready, Degraded, FailingOver, FailedOver, TrafficSynced, FailStatic)."""

    type: str = Field(
        min_length=1,
        max_length=CONDITION_TYPE_MAX_CHARS,
        pattern=CAMEL_REASON_PATTERN,
        description="Condition type, CamelCase.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    reason: str = Field(
        min_length=1,
        max_length=REASON_MAX_CHARS,
        pattern=CAMEL_REASON_PATTERN,
        description="Machine-readable CamelCase reason.",
    )
    message: str = Field(
        max_length=CONDITION_MESSAGE_MAX_CHARS, description="Human-readable details."
    )


class PlacementStatus(ApiModel):
    """What crossfade last saw of one placement."""

    name: DnsLabel = Field(description="Placement name (list-map key).")
    health: PlacementHealth = Field(
        default=PlacementHealth.UNKNOWN, description="Health after hysteresis."
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=REASON_MAX_CHARS,
        pattern=CAMEL_REASON_PATTERN,
        description="CamelCase reason for the health.",
    )
    message: str | None = Field(
        default=None, max_length=MESSAGE_MAX_CHARS, description="Human-readable details."
    )
    desired_nodes: int | None = Field(
        default=None, ge=0, le=MAX_COUNT, description="Node count crossfade asked for."
    )
    ready_nodes: int | None = Field(default=None, ge=0, le=MAX_COUNT, description="Ready nodes.")
    allocatable_accelerators: int | None = Field(
        default=None, ge=0, le=MAX_COUNT, description="Allocatable accelerators on Ready nodes."
    )
    provider_error: str | None = Field(
        default=None,
        max_length=MESSAGE_MAX_CHARS,
        description="Last error the capacity provider reported (e.g. InsufficientCapacity).",
    )
    consecutive_failures: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="Failed probes in a row."
    )
    consecutive_successes: int = Field(
        default=0, ge=0, le=MAX_COUNT, description="Good probes in a row."
    )
    latency_milliseconds: int | None = Field(
        default=None, ge=0, le=MAX_LATENCY_MS, description="Latency of the last probe."
    )
    last_probe_time: datetime | None = Field(default=None, description="When it was last probed.")
    weight: int = Field(
        default=0, ge=0, le=100, description="Percent of traffic currently sent here."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When health last changed."
    )
    node_group: str | None = Field(
        default=None,
        min_length=1,
        max_length=DNS_LABEL_MAX_CHARS,
        description="Templated placements: the node group (node pool, MachineDeployment) "
        "crossfade created or adopted for it; absent while none exists.",
    )


class HistoryEntry(ApiModel):
    """One traffic transition (newest first in status.history)."""

    time: datetime = Field(description="When the transition started.")
    from_placement: str | None = Field(
        default=None,
        alias="from",
        max_length=DNS_LABEL_MAX_CHARS,
        description="Placement traffic left (absent at the first assignment).",
    )
    to_placement: str = Field(
        alias="to",
        min_length=1,
        max_length=DNS_LABEL_MAX_CHARS,
        description="Placement traffic moved to.",
    )
    reason: str = Field(
        min_length=1,
        max_length=REASON_MAX_CHARS,
        pattern=CAMEL_REASON_PATTERN,
        description="CamelCase reason, e.g. FailedOver or FailedBack.",
    )
    message: str | None = Field(
        default=None, max_length=MESSAGE_MAX_CHARS, description="Human-readable details."
    )
    duration_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DURATION_S,
        description="How long the shift took until all steps were applied.",
    )


class InferencePoolStatus(ApiModel):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted upon."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Degraded, FailingOver, FailedOver, TrafficSynced, FailStatic.",
    )
    active_placement: str | None = Field(
        default=None,
        max_length=DNS_LABEL_MAX_CHARS,
        description="Placement carrying most traffic now.",
    )
    preferred_placement: str | None = Field(
        default=None,
        max_length=DNS_LABEL_MAX_CHARS,
        description="Highest-priority placement (where traffic returns on failback).",
    )
    healthy_placements: str | None = Field(
        default=None,
        max_length=HEALTHY_SUMMARY_MAX_CHARS,
        pattern=HEALTHY_SUMMARY_PATTERN,
        description="Healthy placements over all placements, e.g. `1/2` (printer column).",
    )
    placements: list[PlacementStatus] | None = Field(
        default=None,
        max_length=MAX_PLACEMENTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Per-placement health, capacity, probe figures and weight.",
    )
    last_failover_time: datetime | None = Field(
        default=None, description="When traffic last left the preferred placement."
    )
    history: list[HistoryEntry] | None = Field(
        default=None,
        max_length=MAX_HISTORY_ENTRIES,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Last 20 traffic transitions, newest first.",
    )
