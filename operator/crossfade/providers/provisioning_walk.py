"""The candidate walk every provisioner's ``ensure`` runs: adopt, pass over, create, give up.

A placement's node group has one deterministic candidate name per instance type
(``node_group_name(owner, attempt=i)``). ``ensure_node_group`` walks them in order of
preference and keeps the clouds out of it; each provisioner supplies only how to read,
create and delete its own kind of node group:

1. ``find`` reads the candidates that exist (and raises ``OwnershipConflict`` for one that is
   not the owner's, when the provisioner checks ownership up front);
2. each existing candidate is read into a ``CandidateState`` (None: being deleted, neither
   adopted nor created again this pass). One that failed for want of capacity is passed over
   (deleted as well when it never served); the first other one is adopted;
3. otherwise the first candidate that does not exist and whose instance type was not passed
   over is created; a create answered with insufficient capacity (``create`` returns None)
   moves on to the next one;
4. when none is left, ``InsufficientCapacity(code="AllInstanceTypesExhausted")``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from crossfade.providers.errors import InsufficientCapacity
from crossfade.providers.provisioning import Owner, ProvisionResult, node_group_name

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


async def ensure_node_group(
    *,
    owner: Owner,
    instance_types: Sequence[str],
    where: str,
    find: Callable[[Sequence[str]], Awaitable[Mapping[str, _Found]]],
    state_of: Callable[[str, _Found], Awaitable[CandidateState | None]],
    delete: Callable[[str], Awaitable[object]],
    create: Callable[[str, str, tuple[str, ...]], Awaitable[ProvisionResult | None]],
    log_adopted: Callable[[str, str], None],
    capacity_per_instance_type: bool = True,
) -> ProvisionResult:
    """Adopt the owner's live candidate or create one, falling back through instance types.

    ``find(names)`` returns the existing candidates by name; ``state_of(name, found)`` reads
    one; ``delete(name)`` removes an owned candidate; ``create(name, instance_type, skipped)``
    creates one and returns None on insufficient capacity; ``log_adopted(name, instance_type)``
    writes the provisioner's own log line. ``where`` names the cluster in the final error.
    With ``capacity_per_instance_type`` an instance type passed over is not created again
    under a later name (EKS, GKE); without it each candidate stands alone (Cluster API, whose
    candidates differ by infrastructure template, not only by instance type).
    """
    names = [node_group_name(owner, attempt=i) for i in range(len(instance_types))]
    existing = await find(names)
    skipped: list[str] = []
    for name, instance_type in zip(names, instance_types, strict=True):
        if name not in existing:
            continue
        state = await state_of(name, existing[name])
        if state is None:
            continue
        if state.insufficient_capacity:
            skipped.append(instance_type)
            if state.never_served:
                # Ours, never served, never will: do not leave it behind.
                await delete(name)
            continue
        log_adopted(name, instance_type)
        return ProvisionResult(
            name=name,
            instance_type=instance_type,
            created=False,
            adopted=True,
            status=state.status,
            skipped_types=tuple(skipped),
        )
    for name, instance_type in zip(names, instance_types, strict=True):
        if name in existing or (capacity_per_instance_type and instance_type in skipped):
            continue
        result = await create(name, instance_type, tuple(skipped))
        if result is not None:
            return result
        skipped.append(instance_type)
    raise InsufficientCapacity(
        f"{where}: no capacity for any of {', '.join(instance_types)}", code=EXHAUSTED_CODE
    )
