"""The candidate walk every provisioner's ``ensure`` runs: adopt, pass over, create, give up.

A placement's node group has one deterministic candidate name per instance type
(``node_group_name(owner, attempt=i)``). ``ensure_node_group`` walks them in order of
preference and keeps the clouds out of it; each provisioner supplies only how to read,
create and delete its own kind of node group (the ``WalkedProvisioner`` protocol):

1. ``find_candidates`` reads the candidates that exist (and raises ``OwnershipConflict`` for
   one that is not the owner's, when the provisioner checks ownership up front);
2. each existing candidate is read into a ``CandidateState`` by ``candidate_state`` (None:
   being deleted, neither adopted nor created again this pass). One that failed for want of
   capacity is passed over (deleted with ``delete_owned`` as well when it never served); the
   first other one is adopted;
3. otherwise the first candidate that does not exist and whose instance type was not passed
   over is created (``create_candidate`` with a ``CreateAttempt``); a create answered with
   insufficient capacity (it returns None) moves on to the next one;
4. when none is left, ``InsufficientCapacity(code="AllInstanceTypesExhausted")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from crossfade.providers.errors import InsufficientCapacity
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    NodeGroupTemplate,
    Owner,
    ProvisionResult,
    node_group_name,
)

_Found = TypeVar("_Found")

EXHAUSTED_CODE = "AllInstanceTypesExhausted"


@dataclass(frozen=True, slots=True)
class CandidateState:
    """What the walk needs to know about one existing candidate of the owner's.

    ``insufficient_capacity``: it failed for want of capacity and will not serve; its instance
    type is passed over. ``never_served``: such a failed candidate never ran a node, so it is
    deleted rather than left behind. ``status`` is reported when the candidate is adopted.
    """

    status: str
    insufficient_capacity: bool = False
    never_served: bool = False


@dataclass(frozen=True, slots=True)
class CreateAttempt:
    """One candidate the walk asks a provisioner to create.

    ``position`` is the candidate's place in ``template.instance_types`` (the ``attempt`` of
    ``node_group_name``); ``skipped`` the instance types passed over before it.
    """

    owner: Owner
    template: NodeGroupTemplate
    deletion_policy: DeletionPolicyTag
    name: str
    instance_type: str
    position: int
    skipped: tuple[str, ...]

    @property
    def tags(self) -> dict[str, str]:
        """The ownership tags (or labels) the created node group carries."""
        return self.owner.tags(deletion_policy=self.deletion_policy)

    def created(self, *, status: str, create_calls: int) -> ProvisionResult:
        """The result of this attempt when it created the candidate."""
        return self._result(created=True, status=status, create_calls=create_calls)

    def adopted(self, *, status: str, create_calls: int) -> ProvisionResult:
        """The result of this attempt when the name was taken by an earlier create of ours."""
        return self._result(created=False, status=status, create_calls=create_calls)

    def _result(self, *, created: bool, status: str, create_calls: int) -> ProvisionResult:
        return ProvisionResult(
            name=self.name,
            instance_type=self.instance_type,
            created=created,
            adopted=not created,
            status=status,
            skipped_types=self.skipped,
            create_calls=create_calls,
        )


class WalkedProvisioner(Protocol[_Found]):
    """What ``ensure_node_group`` needs from a provisioner: its own kind of node group.

    ``_Found`` is what the provisioner reads for one existing candidate (an EKS node group,
    a GKE node pool, a MachineDeployment).
    """

    async def find_candidates(self, names: Sequence[str], *, owner: Owner) -> Mapping[str, _Found]:
        """Return the candidates among ``names`` that exist, by name."""

    async def candidate_state(
        self, name: str, found: _Found, *, owner: Owner
    ) -> CandidateState | None:
        """Return the walk's view of one existing candidate; None while it is being deleted."""

    async def create_candidate(self, attempt: CreateAttempt) -> ProvisionResult | None:
        """Create one candidate; None when the cloud answered insufficient capacity."""

    async def delete_owned(self, *, name: str, owner: Owner) -> bool:
        """Delete an owned candidate after re-reading its ownership."""

    def log_adopted(self, name: str, instance_type: str) -> None:
        """Write the provisioner's own log line for an adopted candidate."""


async def ensure_node_group(
    provisioner: WalkedProvisioner[_Found],
    *,
    owner: Owner,
    template: NodeGroupTemplate,
    deletion_policy: DeletionPolicyTag,
    where: str,
    capacity_per_instance_type: bool = True,
) -> ProvisionResult:
    """Adopt the owner's live candidate or create one, falling back through instance types.

    ``where`` names the cluster in the final error. With ``capacity_per_instance_type`` an
    instance type passed over is not created again under a later name (EKS, GKE); without it
    each candidate stands alone (Cluster API, whose candidates differ by infrastructure
    template, not only by instance type).
    """
    instance_types = template.instance_types
    names = [node_group_name(owner, attempt=i) for i in range(len(instance_types))]
    existing = await provisioner.find_candidates(names, owner=owner)
    skipped: list[str] = []
    for name, instance_type in zip(names, instance_types, strict=True):
        if name not in existing:
            continue
        state = await provisioner.candidate_state(name, existing[name], owner=owner)
        if state is None:
            continue
        if state.insufficient_capacity:
            skipped.append(instance_type)
            if state.never_served:
                # Ours, never served, never will: do not leave it behind.
                await provisioner.delete_owned(name=name, owner=owner)
            continue
        provisioner.log_adopted(name, instance_type)
        return ProvisionResult(
            name=name,
            instance_type=instance_type,
            created=False,
            adopted=True,
            status=state.status,
            skipped_types=tuple(skipped),
        )
    for position, (name, instance_type) in enumerate(zip(names, instance_types, strict=True)):
        if name in existing or (capacity_per_instance_type and instance_type in skipped):
            continue
        result = await provisioner.create_candidate(
            CreateAttempt(
                owner=owner,
                template=template,
                deletion_policy=deletion_policy,
                name=name,
                instance_type=instance_type,
                position=position,
                skipped=tuple(skipped),
            )
        )
        if result is not None:
            return result
        skipped.append(instance_type)
    raise InsufficientCapacity(
        f"{where}: no capacity for any of {', '.join(instance_types)}", code=EXHAUSTED_CODE
    )
