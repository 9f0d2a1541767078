"""Placement template: how to create a node group that does not exist yet, and its lifecycle."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

from pydantic import Field

from crossfade.api.base import ApiModel, CelRule
from crossfade.api.constants import DNS_SUBDOMAIN_MAX_CHARS, SHORT_TEXT_MAX_CHARS

MAX_INSTANCE_TYPES = 8
MAX_ZONES = 8
MAX_SUBNETS = 16
MAX_TEMPLATE_LABELS = 32
MAX_TEMPLATE_TAINTS = 16
INSTANCE_TYPE_MAX_CHARS = 64
ZONE_MAX_CHARS = 32
SUBNET_MAX_CHARS = 64
LABEL_VALUE_MAX_CHARS = 63
MIN_DISK_SIZE_GIB = 20
MAX_DISK_SIZE_GIB = 16384
ROLE_MAX_CHARS = 2048

INSTANCE_TYPE_PATTERN = r"^[a-z0-9][a-z0-9.-]*$"
ZONE_PATTERN = r"^[a-z]+(-[a-z]+)+-?[0-9]+[a-z]?(-[a-z])?$"
SUBNET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"
TAINT_KEY_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

InstanceType = Annotated[
    str, Field(min_length=1, max_length=INSTANCE_TYPE_MAX_CHARS, pattern=INSTANCE_TYPE_PATTERN)
]
Zone = Annotated[str, Field(min_length=1, max_length=ZONE_MAX_CHARS, pattern=ZONE_PATTERN)]
Subnet = Annotated[str, Field(min_length=1, max_length=SUBNET_MAX_CHARS, pattern=SUBNET_PATTERN)]
LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX_CHARS)]


class Lifecycle(enum.StrEnum):
    """When a templated placement's node group exists."""

    ALWAYS_PRESENT = "AlwaysPresent"
    ON_DEMAND = "OnDemand"


class CapacityType(enum.StrEnum):
    """How the template's instances are bought."""

    ON_DEMAND = "OnDemand"
    SPOT = "Spot"
    CAPACITY_BLOCK = "CapacityBlock"


class TaintEffect(enum.StrEnum):
    """Kubernetes taint effects."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class NodeLabel(ApiModel):
    """A Kubernetes label every node of the template carries."""

    key: str = Field(
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=TAINT_KEY_PATTERN,
        description="Label key, e.g. `crossfade.dev/workload`.",
    )
    value: LabelValue = Field(default="", description="Label value.")


class TemplateTaint(ApiModel):
    """A taint every node of the template carries."""

    key: str = Field(
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=TAINT_KEY_PATTERN,
        description="Taint key, e.g. `nvidia.com/gpu`.",
    )
    value: LabelValue = Field(default="", description="Taint value.")
    effect: TaintEffect = Field(default=TaintEffect.NO_SCHEDULE, description="Taint effect.")


class PlacementTemplate(ApiModel):
    """How crossfade creates this placement's node group when it does not exist."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.capacityType != 'CapacityBlock' || has(self.capacityReservationId)",
            message="template.capacityType CapacityBlock needs template.capacityReservationId: "
            "set the reservation or capacity block id",
            check=lambda t: (
                t.capacity_type != CapacityType.CAPACITY_BLOCK
                or t.capacity_reservation_id is not None
            ),
            field_path=".capacityReservationId",
            reason="FieldValueRequired",
        ),
    )

    instance_types: list[InstanceType] = Field(
        min_length=1,
        max_length=MAX_INSTANCE_TYPES,
        description="Instance or machine types in order of preference (e.g. `p5.48xlarge`, "
        "then `p4d.24xlarge`); on insufficient capacity the next one is tried.",
    )
    capacity_type: CapacityType = Field(
        default=CapacityType.ON_DEMAND, description="On-demand, spot, or a capacity block."
    )
    capacity_reservation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=SHORT_TEXT_MAX_CHARS,
        description="Capacity reservation or capacity block id (CapacityBlock).",
    )
    zones: list[Zone] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        max_length=MAX_ZONES,
        description="Zones to place nodes in (GKE node locations); empty = the cluster's.",
    )
    subnets: list[Subnet] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        max_length=MAX_SUBNETS,
        description="Subnet ids (EKS); empty = the cluster's own subnets.",
    )
    labels: list[NodeLabel] = Field(
        default_factory=list,
        max_length=MAX_TEMPLATE_LABELS,
        json_schema_extra={
            "default": [],
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
        },
        description="Kubernetes labels for the nodes (the inference workload selects them).",
    )
    taints: list[TemplateTaint] = Field(
        default_factory=list,
        json_schema_extra={"default": []},
        max_length=MAX_TEMPLATE_TAINTS,
        description="Taints for the nodes, so only the inference workload lands there.",
    )
    disk_size_gib: int | None = Field(
        default=None,
        ge=MIN_DISK_SIZE_GIB,
        le=MAX_DISK_SIZE_GIB,
        description="Boot disk size in GiB; absent = the cloud's default.",
    )
    node_role: str | None = Field(
        default=None,
        min_length=1,
        max_length=ROLE_MAX_CHARS,
        description="Node IAM role ARN (EKS) or service account email (GKE) of the nodes.",
    )
