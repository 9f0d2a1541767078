"""GKE provisioner: create, adopt and delete crossfade-owned node pools from a template.

Idempotent across crashes without an idempotency token (GKE has none): candidate names are
deterministic (``node_group_name``) and a node pool that already exists with our ownership
labels is adopted instead of created again; a ``409 ALREADY_EXISTS`` on create (a lost reply)
leads to the same check.

Ownership lives in the node pool's GCE resource labels (``config.resourceLabels``). GCP label
keys and values allow only lowercase letters, digits, ``_`` and ``-`` (63 characters at most),
so the crossfade tags are mapped reversibly:

- keys: a fixed table (``GKE_LABEL_KEYS``), e.g. ``crossfade.dev/pool-uid`` ->
  ``crossfade-dev_pool-uid``;
- values: lowercase letters, digits and ``-`` are kept; every other character becomes ``_``
  followed by its two hex digits (``Retain`` -> ``_52etain``, ``a.b`` -> ``a_2eb``), so
  ``decode_label_value`` restores the original exactly.

A stockout on create is reported by GKE through the create operation (DONE with an error
naming ZONE_RESOURCE_POOL_EXHAUSTED, the pool left in ERROR); the failed pool is ours and never
served, so it is deleted and the next machine type is tried under the next name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud import container_v1

from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
)
from crossfade.providers.gke import (
    API_CALL_TIMEOUT_S,
    INSUFFICIENT_CAPACITY_CONDITION_CODES,
    OPERATION_POLL_INTERVAL_S,
    PLACEMENT_MEMBER,
    call_google,
    is_insufficient_capacity_message,
    make_client,
)
from crossfade.providers.provisioning import (
    DELETION_POLICY_TAG,
    OWNER_NAMESPACE_TAG,
    OWNER_PLACEMENT_TAG,
    OWNER_POOL_TAG,
    OWNER_POOL_UID_TAG,
    DeletionPolicyTag,
    NodeGroupTemplate,
    OwnedNodeGroup,
    Owner,
    OwnershipConflict,
    ProvisionResult,
    deletion_policy_of,
)
from crossfade.providers.provisioning_walk import (
    CandidateState,
    CreateAttempt,
    ensure_node_group,
)
from crossfade.providers.registry import placement_member

if TYPE_CHECKING:
    from crossfade.providers.registry import ProviderContext

log = logging.getLogger(__name__)

# A node pool create takes minutes; ensure waits this long, then reports PROVISIONING and the
# next pass adopts the pool (or moves on if it ended in ERROR).
CREATE_WAIT_S = 60.0
GCP_LABEL_MAX_CHARS = 63
GKE_LABEL_KEYS: Mapping[str, str] = {
    OWNER_POOL_TAG: "crossfade-dev_pool",
    OWNER_NAMESPACE_TAG: "crossfade-dev_namespace",
    OWNER_PLACEMENT_TAG: "crossfade-dev_placement",
    OWNER_POOL_UID_TAG: "crossfade-dev_pool-uid",
    DELETION_POLICY_TAG: "crossfade-dev_deletion-policy",
}
TAG_BY_GKE_LABEL_KEY = {label: tag for tag, label in GKE_LABEL_KEYS.items()}
_KEPT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_TAINT_EFFECTS = {
    "NoSchedule": container_v1.NodeTaint.Effect.NO_SCHEDULE,
    "PreferNoSchedule": container_v1.NodeTaint.Effect.PREFER_NO_SCHEDULE,
    "NoExecute": container_v1.NodeTaint.Effect.NO_EXECUTE,
}
RESERVATION_NAME_KEY = "compute.googleapis.com/reservation-name"
PoolStatus = container_v1.NodePool.Status
# A pool in these states will not grow; with a capacity condition crossfade moves on.
FAILED_STATUSES = frozenset({PoolStatus.ERROR, PoolStatus.RUNNING_WITH_ERROR})
OperationStatus = container_v1.Operation.Status


def encode_label_value(value: str) -> str:
    """Return ``value`` as a valid GCP label value (reversible, see the module docstring)."""
    return "".join(
        char if char in _KEPT_CHARS else "".join(f"_{byte:02x}" for byte in char.encode())
        for char in value
    )


def decode_label_value(encoded: str) -> str:
    """Invert ``encode_label_value``."""
    raw = bytearray()
    index = 0
    while index < len(encoded):
        if encoded[index] == "_":
            raw.append(int(encoded[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.extend(encoded[index].encode())
            index += 1
    return raw.decode()


def labels_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Return the GCP resource labels that carry crossfade's ownership tags."""
    labels = {GKE_LABEL_KEYS[key]: encode_label_value(value) for key, value in tags.items()}
    too_long = sorted(key for key, value in labels.items() if len(value) > GCP_LABEL_MAX_CHARS)
    if too_long:
        raise InvalidRequest(
            f"ownership label(s) {', '.join(too_long)} exceed GCP's {GCP_LABEL_MAX_CHARS} "
            "characters once encoded (shorten the pool or placement name)",
            code="OwnerLabelTooLong",
        )
    return labels


def tags_from_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return the crossfade tags a node pool's resource labels carry (others are ignored)."""
    tags: dict[str, str] = {}
    for key, value in labels.items():
        tag = TAG_BY_GKE_LABEL_KEY.get(key)
        if tag is None:
            continue
        try:
            tags[tag] = decode_label_value(value)
        except (ValueError, UnicodeDecodeError):
            continue  # not written by crossfade: the tag counts as missing
    return tags


def create_node_pool_request(
    *,
    parent: str,
    name: str,
    machine_type: str,
    template: NodeGroupTemplate,
    resource_labels: dict[str, str],
) -> container_v1.CreateNodePoolRequest:
    """Return the nodePools.create request for one machine type of the template."""
    taints = []
    for taint in template.taints:
        if taint.effect not in _TAINT_EFFECTS:
            raise InvalidRequest(f"{name}: taint effect {taint.effect!r}", code="InvalidTaint")
        taints.append(
            container_v1.NodeTaint(
                key=taint.key, value=taint.value, effect=_TAINT_EFFECTS[taint.effect]
            )
        )
    config = container_v1.NodeConfig(
        machine_type=machine_type,
        service_account=template.node_role,
        labels=dict(template.labels),
        taints=taints,
        resource_labels=resource_labels,
        spot=template.capacity_type == "SPOT",
    )
    if template.disk_size_gib is not None:
        config.disk_size_gb = template.disk_size_gib
    if template.capacity_reservation_id is not None:
        config.reservation_affinity = container_v1.ReservationAffinity(
            consume_reservation_type=container_v1.ReservationAffinity.Type.SPECIFIC_RESERVATION,
            key=RESERVATION_NAME_KEY,
            values=[template.capacity_reservation_id],
        )
    # GKE counts per zone; the template's sizes are totals.
    zones = max(1, len(template.zones))
    min_per_zone = math.ceil(template.min_size / zones)
    node_pool = container_v1.NodePool(
        name=name,
        config=config,
        initial_node_count=min_per_zone,
        locations=list(template.zones),
        autoscaling=container_v1.NodePoolAutoscaling(
            enabled=True,
            min_node_count=min_per_zone,
            max_node_count=max(min_per_zone, math.ceil(template.max_size / zones)),
        ),
    )
    return container_v1.CreateNodePoolRequest(parent=parent, node_pool=node_pool)


def _pool_insufficient_capacity(pool: container_v1.NodePool) -> bool:
    return any(c.code in INSUFFICIENT_CAPACITY_CONDITION_CODES for c in pool.conditions) or (
        is_insufficient_capacity_message(pool.status_message)
    )


class GkeNodePoolProvisioner:
    """``Provisioner`` for one GKE cluster (see provisioning.Provisioner)."""

    def __init__(
        self,
        *,
        project: str,
        location: str,
        cluster: str,
        client: container_v1.ClusterManagerClient,
        create_wait_s: float = CREATE_WAIT_S,
        poll_interval_s: float = OPERATION_POLL_INTERVAL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parent = f"projects/{project}/locations/{location}/clusters/{cluster}"
        self._location = f"projects/{project}/locations/{location}"
        self._client = client
        self._create_wait_s = create_wait_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock

    def _pool_path(self, name: str) -> str:
        return f"{self.parent}/nodePools/{name}"

    async def aclose(self) -> None:
        """Close the client's HTTP session."""
        await asyncio.to_thread(self._client.transport.close)

    async def _list(self) -> list[container_v1.NodePool]:
        response = await call_google(
            f"list node pools of {self.parent}",
            lambda: self._client.list_node_pools(
                request={"parent": self.parent}, retry=None, timeout=API_CALL_TIMEOUT_S
            ),
        )
        return list(response.node_pools)

    async def _get(self, name: str) -> container_v1.NodePool | None:
        path = self._pool_path(name)
        try:
            return await call_google(
                f"get node pool {path}",
                lambda: self._client.get_node_pool(
                    request={"name": path}, retry=None, timeout=API_CALL_TIMEOUT_S
                ),
            )
        except NotFound:
            return None

    async def _wait(self, operation: container_v1.Operation) -> container_v1.Operation:
        """Poll ``operation`` until DONE or ``create_wait_s`` passed; return its last state."""
        name = f"{self._location}/operations/{operation.name}"
        deadline = self._clock() + self._create_wait_s
        while operation.status != OperationStatus.DONE and self._clock() < deadline:
            await self._sleep(self._poll_interval_s)
            operation = await call_google(
                f"get operation {name}",
                lambda: self._client.get_operation(
                    request={"name": name}, retry=None, timeout=API_CALL_TIMEOUT_S
                ),
            )
        return operation

    def _check_owner(self, pool: container_v1.NodePool, *, name: str, owner: Owner) -> None:
        found = Owner.from_tags(tags_from_labels(pool.config.resource_labels))
        if found != owner:
            raise OwnershipConflict(
                f"gke/{self.parent}/nodePools/{name} exists but is not owned by placement "
                f"{owner.placement!r} of pool {owner.namespace}/{owner.pool}",
                code="OwnershipConflict",
            )

    async def ensure(
        self, *, owner: Owner, template: NodeGroupTemplate, deletion_policy: DeletionPolicyTag
    ) -> ProvisionResult:
        """Adopt the owner's live node pool, or create one, falling back through types on ICE."""
        return await ensure_node_group(
            self,
            owner=owner,
            template=template,
            deletion_policy=deletion_policy,
            where=f"gke/{self.parent}",
        )

    async def find_candidates(
        self, names: Sequence[str], *, owner: Owner
    ) -> dict[str, container_v1.NodePool]:
        """Return the node pools among ``names`` that exist; OwnershipConflict if not ours."""
        listed = {pool.name: pool for pool in await self._list()}
        existing = {name: listed[name] for name in names if name in listed}
        for name, pool in existing.items():
            self._check_owner(pool, name=name, owner=owner)
        return existing

    async def candidate_state(
        self, name: str, found: container_v1.NodePool, *, owner: Owner
    ) -> CandidateState | None:
        """Return the walk's view of one of our node pools; None while it is being deleted.

        Only a pool in ERROR never served; one that runs but cannot grow (RUNNING_WITH_ERROR)
        keeps its nodes, as on EKS (DEGRADED).
        """
        if found.status == PoolStatus.STOPPING:
            return None
        return CandidateState(
            status=PoolStatus(found.status).name,
            insufficient_capacity=found.status in FAILED_STATUSES
            and _pool_insufficient_capacity(found),
            never_served=found.status == PoolStatus.ERROR,
        )

    def log_adopted(self, name: str, instance_type: str) -> None:
        """Log a node pool the walk adopted."""
        self._log("gke node pool adopted", name=name, machine_type=instance_type)

    async def create_candidate(self, attempt: CreateAttempt) -> ProvisionResult | None:
        """Create one node pool; None when GKE answered insufficient capacity (sync or async)."""
        owner, name, machine_type = attempt.owner, attempt.name, attempt.instance_type
        request = create_node_pool_request(
            parent=self.parent,
            name=name,
            machine_type=machine_type,
            template=attempt.template,
            resource_labels=labels_from_tags(attempt.tags),
        )
        try:
            operation = await call_google(
                f"create node pool {self._pool_path(name)}",
                lambda: self._client.create_node_pool(
                    request=request, retry=None, timeout=API_CALL_TIMEOUT_S
                ),
            )
        except InsufficientCapacity as error:
            self._log("gke create hit ICE", name=name, machine_type=machine_type, code=error.code)
            return None
        except ProviderError as error:
            if not isinstance(error.__cause__, google_exceptions.Conflict):
                raise
            # Our own earlier attempt (a lost reply) or someone else's pool: check the labels.
            found = await self._get(name)
            if found is None:
                raise
            self._check_owner(found, name=name, owner=owner)
            self._log("gke node pool adopted after create", name=name, machine_type=machine_type)
            return attempt.adopted(status=PoolStatus(found.status).name, create_calls=1)
        operation = await self._wait(operation)
        status = "PROVISIONING"
        if operation.status == OperationStatus.DONE:
            error_message = operation.error.message if operation.error else ""
            if error_message and is_insufficient_capacity_message(error_message):
                self._log("gke create ended in ICE", name=name, machine_type=machine_type)
                await self.delete_owned(name=name, owner=owner)
                return None
            if error_message:
                raise ProviderUnavailable(
                    f"create node pool {self._pool_path(name)}: {error_message}",
                    code="CreateNodePoolFailed",
                )
            status = "RUNNING"
        self._log("gke node pool created", name=name, machine_type=machine_type)
        return attempt.created(status=status, create_calls=1)

    async def list_owned(self) -> list[OwnedNodeGroup]:
        """Return the cluster's node pools that carry all our ownership labels."""
        owned: list[OwnedNodeGroup] = []
        for pool in await self._list():
            tags = tags_from_labels(pool.config.resource_labels)
            owner = Owner.from_tags(tags)
            if owner is not None:
                owned.append(
                    OwnedNodeGroup(
                        name=pool.name,
                        owner=owner,
                        deletion_policy=deletion_policy_of(tags),
                        status=PoolStatus(pool.status).name,
                    )
                )
        return owned

    async def delete_owned(self, *, name: str, owner: Owner) -> bool:
        """Delete ``name`` after re-reading its labels; never a node pool that is not ours."""
        found = await self._get(name)
        if found is None:
            return False
        self._check_owner(found, name=name, owner=owner)
        path = self._pool_path(name)
        try:
            operation = await call_google(
                f"delete node pool {path}",
                lambda: self._client.delete_node_pool(
                    request={"name": path}, retry=None, timeout=API_CALL_TIMEOUT_S
                ),
            )
        except NotFound:
            return False
        await self._wait(operation)
        self._log("gke node pool deleted", name=name)
        return True

    def _log(self, message: str, **fields: str) -> None:
        # ``name`` is a LogRecord attribute: logging raises KeyError on it as an extra key.
        node_pool = fields.pop("name", "")
        log.info(message, extra={"cluster": self.parent, "node_pool": node_pool, **fields})


def build(placement: Mapping[str, Any], context: ProviderContext) -> GkeNodePoolProvisioner:
    """Provisioner registry factory of ``GKENodePool``: the placement's cluster (wire form)."""
    member = placement_member(placement, PLACEMENT_MEMBER)
    try:
        project, location, cluster = (
            str(member["project"]),
            str(member["location"]),
            str(member["cluster"]),
        )
    except KeyError as missing:
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks {missing}"
        ) from None
    try:
        client = make_client(endpoint=context.gke_endpoint, credentials=context.gke_credentials)
    except google_auth_exceptions.DefaultCredentialsError as error:
        raise PermissionDenied(
            f"{project}/{cluster}: no Application Default Credentials ({error})",
            code="NoCredentials",
        ) from None
    return GkeNodePoolProvisioner(
        project=project, location=location, cluster=cluster, client=client
    )
