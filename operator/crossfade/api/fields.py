"""Reusable constrained field types and enums of the API."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from crossfade.api.constants import (
    DNS_LABEL_MAX_CHARS,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_MAX_CHARS,
    DNS_SUBDOMAIN_PATTERN,
    NAME_MAX_CHARS,
    SHORT_TEXT_MAX_CHARS,
)

DnsLabel = Annotated[
    str, Field(min_length=1, max_length=DNS_LABEL_MAX_CHARS, pattern=DNS_LABEL_PATTERN)
]
DnsSubdomain = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_CHARS, pattern=DNS_SUBDOMAIN_PATTERN)
]
ShortText = Annotated[str, Field(min_length=1, max_length=SHORT_TEXT_MAX_CHARS)]
ObjectName = Annotated[str, Field(min_length=1, max_length=NAME_MAX_CHARS)]


class Role(enum.StrEnum):
    """What a placement is for."""

    PRIMARY = "Primary"
    STANDBY = "Standby"


class ProviderType(enum.StrEnum):
    """Which capacity API a placement scales (the ``provider.type`` discriminator)."""

    EKS_NODE_GROUP = "EKSNodeGroup"
    GKE_NODE_POOL = "GKENodePool"
    CLUSTER_API = "ClusterAPI"
    KARPENTER_NODE_POOL = "KarpenterNodePool"


class BackendKind(enum.StrEnum):
    """Kinds a placement's traffic weight can point at."""

    SERVICE = "Service"
    INFERENCE_POOL = "InferencePool"


class HttpMethod(enum.StrEnum):
    """HTTP methods the inference probe may use."""

    GET = "GET"
    POST = "POST"


class TrafficMode(enum.StrEnum):
    """How traffic weights are shared between healthy placements."""

    ACTIVE_PASSIVE = "ActivePassive"
    WEIGHTED = "Weighted"
    CAPACITY_PROPORTIONAL = "CapacityProportional"


class DriftPolicy(enum.StrEnum):
    """What to do when someone else changed the weights crossfade wrote."""

    REASSERT = "Reassert"
    BACK_OFF = "BackOff"


class Route53RecordType(enum.StrEnum):
    """DNS record types crossfade can manage as weighted records."""

    A = "A"
    AAAA = "AAAA"
    CNAME = "CNAME"


class DeletionPolicy(enum.StrEnum):
    """What happens to cloud capacity when the pool is deleted."""

    RETAIN = "Retain"
    SCALE_TO_MIN = "ScaleToMin"
    DELETE = "Delete"


class PlacementHealth(enum.StrEnum):
    """A placement's health as reported in status."""

    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    UNHEALTHY = "Unhealthy"


class ConditionStatus(enum.StrEnum):
    """metav1.Condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(enum.StrEnum):
    """Condition types crossfade writes on a pool."""

    READY = "Ready"
    DEGRADED = "Degraded"
    FAILING_OVER = "FailingOver"
    FAILED_OVER = "FailedOver"
    TRAFFIC_SYNCED = "TrafficSynced"
    FAIL_STATIC = "FailStatic"
