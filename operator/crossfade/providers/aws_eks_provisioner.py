"""EKS provisioner: create, adopt and delete crossfade-owned managed node groups from a template.

Idempotent across crashes: candidate names are deterministic (``node_group_name``), every
create carries a ``clientRequestToken`` derived from the owner and name, and a node group that
already exists with our ownership tags is adopted instead of created again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from crossfade.providers.aws_api import EksApi
from crossfade.providers.aws_eks import state_from_nodegroup
from crossfade.providers.base import idempotency_token
from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    UpdateInProgress,
)
from crossfade.providers.provisioning import (
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

if TYPE_CHECKING:
    from mypy_boto3_eks.literals import TaintEffectType
    from mypy_boto3_eks.type_defs import (
        CreateNodegroupRequestTypeDef,
        NodegroupTypeDef,
        TaintTypeDef,
    )

log = logging.getLogger(__name__)

RESOURCE_IN_USE_CODE = "ResourceInUseException"
# A node group in these states will not serve; with an ICE health issue crossfade moves on.
CREATE_FAILED = "CREATE_FAILED"
FAILED_STATUSES = frozenset({CREATE_FAILED, "DEGRADED"})
GONE_STATUSES = frozenset({"DELETING"})
_TAINT_EFFECTS: dict[str, TaintEffectType] = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}


def create_request(
    *,
    cluster: str,
    name: str,
    instance_type: str,
    template: NodeGroupTemplate,
    tags: dict[str, str],
    token: str,
) -> CreateNodegroupRequestTypeDef:
    """Return the CreateNodegroup request for one instance type of the template."""
    if template.capacity_reservation_id is not None:
        raise InvalidRequest(
            f"{name}: capacity reservations need a launch template, not supported yet",
            code="CapacityReservationUnsupported",
        )
    taints: list[TaintTypeDef] = []
    for taint in template.taints:
        if taint.effect not in _TAINT_EFFECTS:
            raise InvalidRequest(f"{name}: taint effect {taint.effect!r}", code="InvalidTaint")
        taints.append(
            {"key": taint.key, "value": taint.value, "effect": _TAINT_EFFECTS[taint.effect]}
        )
    request: CreateNodegroupRequestTypeDef = {
        "clusterName": cluster,
        "nodegroupName": name,
        "scalingConfig": {
            "minSize": template.min_size,
            "maxSize": template.max_size,
            "desiredSize": template.min_size,
        },
        "subnets": list(template.subnets),
        "nodeRole": template.node_role,
        "instanceTypes": [instance_type],
        "capacityType": "SPOT" if template.capacity_type == "SPOT" else "ON_DEMAND",
        "labels": dict(template.labels),
        "tags": tags,
        "clientRequestToken": token,
    }
    if taints:
        request["taints"] = taints
    if template.disk_size_gib is not None:
        request["diskSize"] = template.disk_size_gib
    return request


class EksNodeGroupProvisioner:
    """``Provisioner`` for one EKS cluster (see provisioning.Provisioner)."""

    def __init__(self, *, cluster: str, eks: EksApi) -> None:
        self.cluster = cluster
        self._eks = eks

    async def _describe(self, name: str) -> NodegroupTypeDef | None:
        try:
            return await self._eks.describe_nodegroup(cluster=self.cluster, nodegroup=name)
        except NotFound:
            return None

    def _check_owner(self, nodegroup: NodegroupTypeDef, *, name: str, owner: Owner) -> None:
        found = Owner.from_tags(nodegroup.get("tags", {}))
        if found != owner:
            raise OwnershipConflict(
                f"eks/{self.cluster}/{name} exists but is not owned by placement "
                f"{owner.placement!r} of pool {owner.namespace}/{owner.pool}",
                code="OwnershipConflict",
            )

    async def ensure(
        self, *, owner: Owner, template: NodeGroupTemplate, deletion_policy: DeletionPolicyTag
    ) -> ProvisionResult:
        """Adopt the owner's live node group, or create one, falling back through types on ICE."""
        return await ensure_node_group(
            self,
            owner=owner,
            template=template,
            deletion_policy=deletion_policy,
            where=f"eks/{self.cluster}",
        )

    async def find_candidates(
        self, names: Sequence[str], *, owner: Owner
    ) -> dict[str, NodegroupTypeDef]:
        """Return the node groups among ``names`` that exist; OwnershipConflict if not ours."""
        listed = set(await self._eks.list_nodegroups(cluster=self.cluster))
        existing: dict[str, NodegroupTypeDef] = {}
        for name in names:
            if name in listed and (found := await self._describe(name)) is not None:
                self._check_owner(found, name=name, owner=owner)
                existing[name] = found
        return existing

    async def candidate_state(
        self, name: str, found: NodegroupTypeDef, *, owner: Owner
    ) -> CandidateState | None:
        """Return the walk's view of one of our node groups; None while it is being deleted."""
        state = state_from_nodegroup(found)
        if state.status in GONE_STATUSES:
            return None
        return CandidateState(
            status=state.status,
            insufficient_capacity=state.insufficient_capacity and state.status in FAILED_STATUSES,
            never_served=state.status == CREATE_FAILED,
        )

    def log_adopted(self, name: str, instance_type: str) -> None:
        """Log a node group the walk adopted."""
        self._log("eks node group adopted", name=name, instance_type=instance_type)

    async def create_candidate(self, attempt: CreateAttempt) -> ProvisionResult | None:
        """Create one node group; None when the cloud answered insufficient capacity."""
        owner, name, instance_type = attempt.owner, attempt.name, attempt.instance_type
        token = idempotency_token("create", owner.pool_uid, owner.placement, name)
        request = create_request(
            cluster=self.cluster,
            name=name,
            instance_type=instance_type,
            template=attempt.template,
            tags=attempt.tags,
            token=token,
        )
        before = self._eks.caller.attempts["CreateNodegroup"]
        try:
            created = await self._eks.create_nodegroup(request)
        except InsufficientCapacity as error:
            self._log("eks create hit ICE", name=name, instance_type=instance_type, code=error.code)
            return None
        except UpdateInProgress as error:
            if error.code != RESOURCE_IN_USE_CODE:
                raise
            # Our own earlier attempt (a lost reply) or someone else's node group: check tags.
            found = await self._describe(name)
            if found is None:
                raise
            self._check_owner(found, name=name, owner=owner)
            self._log("eks node group adopted after create", name=name, instance_type=instance_type)
            return attempt.adopted(
                status=str(found.get("status", "UNKNOWN")),
                create_calls=self._eks.caller.attempts["CreateNodegroup"] - before,
            )
        self._log("eks node group created", name=name, instance_type=instance_type)
        return attempt.created(
            status=str(created.get("status", "CREATING")),
            create_calls=self._eks.caller.attempts["CreateNodegroup"] - before,
        )

    async def list_owned(self) -> list[OwnedNodeGroup]:
        """Return the cluster's node groups that carry all our ownership tags."""
        owned: list[OwnedNodeGroup] = []
        for name in await self._eks.list_nodegroups(cluster=self.cluster):
            found = await self._describe(name)
            if found is None:
                continue
            tags = found.get("tags", {})
            owner = Owner.from_tags(tags)
            if owner is not None:
                owned.append(
                    OwnedNodeGroup(
                        name=name,
                        owner=owner,
                        deletion_policy=deletion_policy_of(tags),
                        status=str(found.get("status", "UNKNOWN")),
                    )
                )
        return owned

    async def delete_owned(self, *, name: str, owner: Owner) -> bool:
        """Delete ``name`` after re-reading its tags; never a node group that is not ours."""
        found = await self._describe(name)
        if found is None:
            return False
        self._check_owner(found, name=name, owner=owner)
        try:
            await self._eks.delete_nodegroup(cluster=self.cluster, nodegroup=name)
        except NotFound:
            return False
        self._log("eks node group deleted", name=name)
        return True

    def _log(self, message: str, **fields: str) -> None:
        # ``name`` is a LogRecord attribute: logging raises KeyError on it as an extra key.
        node_group = fields.pop("name", "")
        log.info(message, extra={"cluster": self.cluster, "node_group": node_group, **fields})
