"""Provisioning contract: deterministic node group names, ownership tags, the Provisioner protocol.

A placement with a template may have no node group yet. Creation must survive a crash
between the create call and the status write, so nothing about it lives only in memory:

- the node group's name is derived from the pool UID and the placement (and the index of
  the instance type tried), so a restarted operator looks for the same names;
- every node group crossfade creates carries the ownership tags below, so it can tell its
  own node groups from a team's hand-made one of the same name, which it never touches.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from crossfade.providers.errors import InvalidRequest

OWNER_POOL_TAG = "crossfade.dev/pool"
OWNER_NAMESPACE_TAG = "crossfade.dev/namespace"
OWNER_PLACEMENT_TAG = "crossfade.dev/placement"
OWNER_POOL_UID_TAG = "crossfade.dev/pool-uid"
# The pool's deletionPolicy when the node group was created: the reaper needs it after the
# pool itself is gone.
DELETION_POLICY_TAG = "crossfade.dev/deletion-policy"
OWNERSHIP_TAGS = (OWNER_POOL_TAG, OWNER_NAMESPACE_TAG, OWNER_PLACEMENT_TAG, OWNER_POOL_UID_TAG)

NAME_PREFIX = "cf"
# GKE node pool names are the shortest common limit (40); EKS allows 63.
NODE_GROUP_NAME_MAX_CHARS = 40
NAME_HASH_CHARS = 8
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class DeletionPolicyTag(enum.StrEnum):
    """What the reaper may do with an orphan (the pool's deletionPolicy, recorded at create)."""

    RETAIN = "Retain"
    SCALE_TO_MIN = "ScaleToMin"
    DELETE = "Delete"


class OwnershipConflict(InvalidRequest):
    """A node group of the wanted name exists but is not this placement's (no or other tags)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Which pool and placement a node group belongs to."""

    namespace: str
    pool: str
    placement: str
    pool_uid: str

    def tags(self, *, deletion_policy: DeletionPolicyTag) -> dict[str, str]:
        """Return the tags (EKS) or labels (GKE) that mark a node group as ours."""
        return {
            OWNER_POOL_TAG: self.pool,
            OWNER_NAMESPACE_TAG: self.namespace,
            OWNER_PLACEMENT_TAG: self.placement,
            OWNER_POOL_UID_TAG: self.pool_uid,
            DELETION_POLICY_TAG: deletion_policy.value,
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Owner | None:
        """Return the owner the tags name, or None when any ownership tag is missing."""
        if not all(tags.get(key) for key in OWNERSHIP_TAGS):
            return None
        return cls(
            namespace=tags[OWNER_NAMESPACE_TAG],
            pool=tags[OWNER_POOL_TAG],
            placement=tags[OWNER_PLACEMENT_TAG],
            pool_uid=tags[OWNER_POOL_UID_TAG],
        )


def deletion_policy_of(tags: Mapping[str, str]) -> DeletionPolicyTag:
    """Return the recorded deletion policy; anything unknown reads as Retain (the safe one)."""
    try:
        return DeletionPolicyTag(tags.get(DELETION_POLICY_TAG, ""))
    except ValueError:
        return DeletionPolicyTag.RETAIN


def node_group_name(owner: Owner, *, attempt: int = 0) -> str:
    """Return the deterministic name of the owner's node group for instance-type ``attempt``.

    ``cf-<placement slug>-<hash of pool uid and placement>-<attempt>``: a DNS label of at most
    NODE_GROUP_NAME_MAX_CHARS, valid as an EKS node group and a GKE node pool name.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    digest = hashlib.sha256(f"{owner.pool_uid}\x1f{owner.placement}".encode()).hexdigest()
    suffix = f"-{digest[:NAME_HASH_CHARS]}-{attempt}"
    room = NODE_GROUP_NAME_MAX_CHARS - len(NAME_PREFIX) - 1 - len(suffix)
    slug = _NOT_DNS.sub("-", owner.placement.lower()).strip("-")[:room].strip("-") or "p"
    return f"{NAME_PREFIX}-{slug}{suffix}"


@dataclass(frozen=True, slots=True)
class Taint:
    """A Kubernetes taint for the template's nodes."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class NodeGroupTemplate:
    """Provider-neutral description of a node group to create (from the placement template).

    ``instance_types`` are in order of preference; on insufficient capacity the provisioner
    moves to the next one. ``capacity_type`` is ON_DEMAND, SPOT or CAPACITY_BLOCK.
    """

    instance_types: tuple[str, ...]
    subnets: tuple[str, ...]
    node_role: str
    min_size: int
    max_size: int
    capacity_type: str = "ON_DEMAND"
    capacity_reservation_id: str | None = None
    disk_size_gib: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    # GKE node locations; empty means the cluster's own zones. EKS places nodes by subnet.
    zones: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ValueError("a template needs at least one instance type")
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError("template sizes need 0 <= min_size <= max_size")


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """Outcome of ``Provisioner.ensure``.

    ``created`` is True when this call sent a create that the cloud accepted; ``adopted`` when
    an existing node group with our tags was taken over instead (after a crash or lost reply).
    ``skipped_types`` lists instance types passed over for insufficient capacity, in order:
    the caller feeds them to the engine's insufficient-capacity cache.
    """

    name: str
    instance_type: str
    created: bool
    adopted: bool
    status: str
    skipped_types: tuple[str, ...] = ()
    create_calls: int = 0


@dataclass(frozen=True, slots=True)
class OwnedNodeGroup:
    """A node group that carries crossfade's ownership tags."""

    name: str
    owner: Owner
    deletion_policy: DeletionPolicyTag
    status: str


@runtime_checkable
class Provisioner(Protocol):
    """Creates, adopts, lists and deletes a placement's node groups in one cloud cluster.

    Error contract as ``CapacityProvider``: only ``ProviderError`` subclasses leave, plus
    ``OwnershipConflict`` when a node group of the wanted name is not ours.
    """

    async def ensure(
        self, *, owner: Owner, template: NodeGroupTemplate, deletion_policy: DeletionPolicyTag
    ) -> ProvisionResult:
        """Return the owner's node group, creating it (idempotently) when none exists."""
        ...

    async def list_owned(self) -> list[OwnedNodeGroup]:
        """Return every node group in the cluster that carries our ownership tags."""
        ...

    async def delete_owned(self, *, name: str, owner: Owner) -> bool:
        """Delete ``name`` only if its tags name ``owner``; return False if it was gone."""
        ...


_CAPACITY_TYPES = {"OnDemand": "ON_DEMAND", "Spot": "SPOT", "CapacityBlock": "CAPACITY_BLOCK"}
# Cluster API machines get their cloud identity from the infrastructure template, not nodeRole.
IDENTITY_FROM_TEMPLATE_PROVIDERS = frozenset({"ClusterAPI"})


def template_from_placement(placement: Mapping[str, Any]) -> NodeGroupTemplate:
    """Return the provider-neutral template of a placement (wire form, as the API validated it)."""
    name = placement.get("name")
    wire = placement.get("template")
    if not isinstance(wire, Mapping):
        raise InvalidRequest(f"placement {name!r} has no template", code="NoTemplate")
    provider_type = (placement.get("provider") or {}).get("type")
    if not wire.get("nodeRole") and provider_type not in IDENTITY_FROM_TEMPLATE_PROVIDERS:
        raise InvalidRequest(
            f"placement {name!r}: template.nodeRole is needed to create a node group",
            code="NoNodeRole",
        )
    nodes = placement.get("nodes") or {}
    return NodeGroupTemplate(
        instance_types=tuple(wire.get("instanceTypes", ())),
        subnets=tuple(wire.get("subnets", ())),
        zones=tuple(str(zone) for zone in wire.get("zones", ())),
        node_role=str(wire.get("nodeRole") or ""),
        min_size=int(nodes.get("min", 0)),
        max_size=int(nodes.get("max", 1)),
        capacity_type=_CAPACITY_TYPES.get(str(wire.get("capacityType", "OnDemand")), "ON_DEMAND"),
        capacity_reservation_id=wire.get("capacityReservationId"),
        disk_size_gib=wire.get("diskSizeGib"),
        labels={str(label["key"]): str(label.get("value", "")) for label in wire.get("labels", ())},
        taints=tuple(
            Taint(
                key=str(taint["key"]),
                value=str(taint.get("value", "")),
                effect=str(taint.get("effect", "NoSchedule")),
            )
            for taint in wire.get("taints", ())
        ),
    )
