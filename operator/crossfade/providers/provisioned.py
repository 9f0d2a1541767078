"""ProvisionedProvider: a CapacityProvider for a templated placement whose node group may not exist.

The engine knows nothing about creation. To it, a templated placement without a node group
is a cold standby: ``describe`` answers "0 nodes, status NotProvisioned", no error. When the
engine scales it above 0, ``scale`` first calls ``Provisioner.ensure`` (idempotent: after a
crash it adopts what the previous process created), then builds the ordinary provider of the
node group it got and scales that.

- ``lifecycle: AlwaysPresent`` ensures on the first ``describe``; the node group is created at
  ``nodes.min`` (the template's min) and the engine keeps it there like any placement.
- Insufficient capacity on every instance type surfaces twice: ``scale`` raises the
  provisioner's ``InsufficientCapacity``, and the next ``describe`` carries it as an
  insufficient-capacity health issue, so the engine's ICE cache backs off from this
  placement and asks the next one. The issue is reported once per failed ensure: after the
  engine's backoff it may ask again, and a new attempt starts from the first instance type.
- A node group that later reports insufficient capacity itself (EKS: the launch failed
  after the create, ``CREATE_FAILED`` / ``DEGRADED`` with an ICE health issue) is ICE'd by the
  engine like any placement; the next ``scale`` calls ``ensure`` again, which passes over that
  instance type (deleting a ``CREATE_FAILED`` node group of ours) and creates the next one.
- Instance types skipped on the way (``ProvisionResult.skipped_types``) become
  ``InstanceTypeSkipped`` Events and a metric; the placement itself is not ICE'd, it runs on
  the type that had capacity.

Events go through ``notify`` (the handler posts them on the pool); this module imports no
Kubernetes client.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from crossfade.providers.base import CapacityProvider, HealthIssue, NodeGroupState, ScaleResult
from crossfade.providers.errors import InsufficientCapacity, NotFound, ProviderError
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    NodeGroupTemplate,
    Owner,
    Provisioner,
    ProvisionResult,
)

log = logging.getLogger(__name__)

NOT_PROVISIONED_STATUS = "NotProvisioned"
# The same Event (reason and message) again within this time is only logged: a create that
# keeps failing on every retry must not post one Event per pass.
REPEAT_EVENT_AFTER_S = 300.0
ALWAYS_PRESENT = "AlwaysPresent"
# Where each provider type's member names the node group its provider scales; the provider
# of a created node group is built from the placement with that field set to the new name.
NODE_GROUP_NAME_FIELDS: Mapping[str, tuple[str, str]] = {
    "EKSNodeGroup": ("eksNodeGroup", "nodegroup"),
    "GKENodePool": ("gkeNodePool", "nodePool"),
    "ClusterAPI": ("clusterAPI", "machineDeployment"),
}


class ProvisioningEvent(enum.StrEnum):
    """Event reasons of provisioning (posted on the pool)."""

    CREATED = "NodeGroupCreated"
    ADOPTED = "NodeGroupAdopted"
    TYPE_SKIPPED = "InstanceTypeSkipped"
    FAILED = "ProvisioningFailed"


Notify = Callable[[str, ProvisioningEvent, str], Awaitable[None]]  # (Normal|Warning, reason, msg)
BuildInner = Callable[[str], CapacityProvider]  # node group name -> its ordinary provider


class ProvisioningMetrics:
    """Prometheus series of node group provisioning; one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.outcomes = Counter(
            "crossfade_node_group_provisioning",
            "Node group ensure outcomes of templated placements: created, adopted, "
            "instance_type_skipped, failed (by error kind in `kind`)",
            ["provider_type", "namespace", "pool", "placement", "outcome", "kind"],
            registry=self.registry,
        )


def placement_with_node_group(placement: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return the placement (wire form) with its provider member naming node group ``name``."""
    provider = dict(placement.get("provider") or {})
    provider_type = str(provider.get("type") or "")
    member_field, name_field = NODE_GROUP_NAME_FIELDS.get(provider_type, ("", ""))
    if not member_field:
        raise NotFound(
            f"provider type {provider_type!r} has no node group name field",
            code="ProvisioningUnsupported",
        )
    member = dict(provider.get(member_field) or {})
    member[name_field] = name
    return {**placement, "provider": {**provider, member_field: member}}


def provisioned_of(provider: object) -> ProvisionedProvider | None:
    """Return the ProvisionedProvider under a provider's wrappers (each keeps it as ``inner``)."""
    while provider is not None:
        if isinstance(provider, ProvisionedProvider):
            return provider
        provider = getattr(provider, "inner", None)
    return None


def node_group_of(provider: object) -> str | None:
    """Return the node group a templated placement's provider uses, None for any other."""
    provisioned = provisioned_of(provider)
    return provisioned.node_group if provisioned is not None else None


@dataclass(frozen=True, slots=True)
class ProvisionedTarget:
    """What a ProvisionedProvider creates: whose, from which template, under which policy."""

    owner: Owner
    template: NodeGroupTemplate
    deletion_policy: DeletionPolicyTag
    provider_type: str
    always_present: bool


class ProvisionedProvider:
    """``CapacityProvider`` of one templated placement (see the module docstring)."""

    def __init__(
        self,
        *,
        target: ProvisionedTarget,
        provisioner: Provisioner,
        build_inner: BuildInner,
        notify: Notify | None = None,
        metrics: ProvisioningMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.provisioner = provisioner
        self._build_inner = build_inner
        self._notify = notify
        self._metrics = metrics
        self._inner: CapacityProvider | None = None
        self._node_group: str | None = None
        self._looked_for_existing = False
        self._pending_ice: HealthIssue | None = None
        self._inner_out_of_capacity = False
        self._retired: list[CapacityProvider] = []  # providers of node groups passed over
        self._lock = asyncio.Lock()
        self._clock = clock
        self._posted: dict[tuple[ProvisioningEvent, str], float] = {}

    @property
    def name(self) -> str:
        owner = self.target.owner
        if self._inner is not None:
            return self._inner.name
        return f"provisioned/{owner.namespace}/{owner.pool}/{owner.placement}"

    @property
    def node_group(self) -> str | None:
        """Return the name of the node group in use, None while none exists."""
        return self._node_group

    async def describe(self) -> NodeGroupState:
        """Describe the node group, or report a not-yet-created one as 0 nodes."""
        async with self._lock:
            if self._inner is None and not self._looked_for_existing:
                await self._find_existing()
            if self._inner is None and self.target.always_present:
                try:
                    await self._ensure_reporting()
                except InsufficientCapacity:
                    # Not an error of describe (see CapacityProvider): the pending issue
                    # below carries it to the engine's ICE cache.
                    log.info("always-present node group has no capacity yet")
        inner = self._inner
        if inner is None:
            return self._not_provisioned()
        try:
            state = await inner.describe()
        except NotFound:
            # Deleted behind our back (by hand or by a finalizer race): a cold standby again.
            log.warning("provisioned node group is gone", extra={"node_group": self._node_group})
            self._inner, self._node_group = None, None
            return self._not_provisioned()
        self._inner_out_of_capacity = state.insufficient_capacity
        return state

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        """Create (or adopt) the node group when the engine first asks for nodes, then scale."""
        async with self._lock:
            if self._inner is None and desired <= 0:
                return ScaleResult(desired=0, changed=False, token=token)
            if self._inner is None or (desired > 0 and self._inner_out_of_capacity):
                await self._ensure_reporting()
        inner = self._inner
        if inner is None:
            raise NotFound(f"{self.name}: no node group after ensure", code="NotProvisioned")
        return await inner.scale(desired=desired, token=token)

    async def scale_if_present(self, *, desired: int, token: str) -> ScaleResult | None:
        """Scale the node group only if one exists (never create); None when there is none.

        For the finalizer's ScaleToMin: deleting a pool must not create capacity.
        """
        async with self._lock:
            if self._inner is None and not self._looked_for_existing:
                await self._find_existing()
        inner = self._inner
        if inner is None:
            return None
        return await inner.scale(desired=desired, token=token)

    async def aclose(self) -> None:
        """Close the inner provider's and the provisioner's clients, when they have any."""
        for owner in (*self._retired, self._inner, self.provisioner):
            closer = getattr(owner, "aclose", None)
            if callable(closer):
                await closer()

    async def delete_owned(self) -> list[str]:
        """Delete every node group this placement's owner has in the cluster; return the names.

        For ``deletionPolicy: Delete``. Ownership is checked by the provisioner (tags re-read
        before each delete), so a hand-made node group of a wanted name is never touched.
        """
        owner = self.target.owner
        deleted: list[str] = []
        for group in await self.provisioner.list_owned():
            if group.owner != owner:
                continue
            if await self.provisioner.delete_owned(name=group.name, owner=owner):
                deleted.append(group.name)
        self._inner, self._node_group = None, None
        return deleted

    def _not_provisioned(self) -> NodeGroupState:
        issues: tuple[HealthIssue, ...] = ()
        if self._pending_ice is not None:
            issues, self._pending_ice = (self._pending_ice,), None
        return NodeGroupState(
            desired=0,
            min_size=0,
            max_size=self.target.template.max_size,
            ready=0,
            status=NOT_PROVISIONED_STATUS,
            updating=False,
            health_issues=issues,
        )

    async def _find_existing(self) -> None:
        """Adopt a live node group a previous process created (one list, at first describe)."""
        owner = self.target.owner
        for group in await self.provisioner.list_owned():
            if group.owner == owner and group.status not in {"DELETING", "Deleting"}:
                self._use(group.name)
                await self._emit(
                    "Normal",
                    ProvisioningEvent.ADOPTED,
                    f"{owner.placement}: adopted node group {group.name} (status {group.status})",
                )
                self._count("adopted")
                break
        self._looked_for_existing = True

    async def _ensure_reporting(self) -> None:
        owner = self.target.owner
        try:
            result = await self.provisioner.ensure(
                owner=owner,
                template=self.target.template,
                deletion_policy=self.target.deletion_policy,
            )
        except ProviderError as error:
            self._count("failed", kind=error.kind.value)
            if isinstance(error, InsufficientCapacity):
                self._pending_ice = HealthIssue(
                    code=error.code or "InsufficientCapacity",
                    message=error.message,
                    insufficient_capacity=True,
                )
            await self._emit(
                "Warning",
                ProvisioningEvent.FAILED,
                f"{owner.placement}: creating a node group failed: "
                f"{error.code or error.kind.value}: {error.message}",
            )
            raise
        await self._report(result)
        self._use(result.name)
        self._looked_for_existing = True

    async def _report(self, result: ProvisionResult) -> None:
        placement = self.target.owner.placement
        for instance_type in result.skipped_types:
            self._count("instance_type_skipped")
            await self._emit(
                "Warning",
                ProvisioningEvent.TYPE_SKIPPED,
                f"{placement}: instance type {instance_type} had no capacity; moved on",
            )
        if result.created:
            self._count("created")
            await self._emit(
                "Normal",
                ProvisioningEvent.CREATED,
                f"{placement}: created node group {result.name} ({result.instance_type})",
            )
        elif result.adopted:
            self._count("adopted")
            await self._emit(
                "Normal",
                ProvisioningEvent.ADOPTED,
                f"{placement}: adopted node group {result.name} ({result.instance_type}, "
                f"status {result.status})",
            )

    def _use(self, name: str) -> None:
        if name == self._node_group and self._inner is not None:
            return
        if self._inner is not None:
            self._retired.append(self._inner)
        self._inner = self._build_inner(name)
        self._node_group = name
        self._inner_out_of_capacity = False
        log.info("placement uses node group", extra={"node_group": name})

    def _count(self, outcome: str, *, kind: str = "") -> None:
        if self._metrics is None:
            return
        owner = self.target.owner
        self._metrics.outcomes.labels(
            self.target.provider_type, owner.namespace, owner.pool, owner.placement, outcome, kind
        ).inc()

    async def _emit(self, event_type: str, reason: ProvisioningEvent, message: str) -> None:
        log.info(message, extra={"reason": reason.value})
        if self._notify is None:
            return
        now, key = self._clock(), (reason, message)
        last = self._posted.get(key)
        if last is not None and now - last < REPEAT_EVENT_AFTER_S:
            return
        self._posted = {k: t for k, t in self._posted.items() if now - t < REPEAT_EVENT_AFTER_S}
        self._posted[key] = now
        await self._notify(event_type, reason, message)
