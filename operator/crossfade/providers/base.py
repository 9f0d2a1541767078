"""CapacityProvider protocol: describe and scale one placement's node group in a cloud."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from crossfade.engine.observations import ProviderErrorKind, ProviderObservation
from crossfade.providers.errors import ProviderError

# Longest idempotency token every supported cloud accepts (EKS clientRequestToken: 64).
IDEMPOTENCY_TOKEN_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class HealthIssue:
    """One problem the cloud reports on a node group (EKS ``health.issues[]`` and alike).

    ``insufficient_capacity`` is True when the issue means the cloud could not launch the
    instances asked for (the provider decides from its vendor codes).
    """

    code: str
    message: str
    insufficient_capacity: bool = False
    resource_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeGroupState:
    """What the cloud says about one node group at one moment.

    ``ready`` is None when the cloud does not say how many nodes are up (EKS does not);
    ``status`` is the provider-native status string (``ACTIVE``, ``RUNNING``, ...);
    ``updating`` is True while a size change or another update is still in flight.
    """

    desired: int
    min_size: int
    max_size: int
    ready: int | None
    status: str
    updating: bool
    health_issues: tuple[HealthIssue, ...] = ()

    @property
    def insufficient_capacity(self) -> bool:
        """Return True when any health issue means the cloud is out of capacity."""
        return any(issue.insufficient_capacity for issue in self.health_issues)

    def to_observation(self, *, placement: str, at: float) -> ProviderObservation:
        """Return the engine's view of this state (ICE shows as the error kind)."""
        ice = [issue for issue in self.health_issues if issue.insufficient_capacity]
        return ProviderObservation(
            placement=placement,
            at=at,
            desired=self.desired,
            ready=self.ready,
            min_size=self.min_size,
            max_size=self.max_size,
            updating=self.updating,
            error=ProviderErrorKind.INSUFFICIENT_CAPACITY if ice else None,
            message="; ".join(f"{issue.code}: {issue.message}" for issue in ice),
        )


@dataclass(frozen=True, slots=True)
class ScaleResult:
    """Outcome of one ``scale`` call.

    ``changed`` is False when the node group already asked for ``desired`` and no write was
    made; ``in_progress`` is True while the cloud is still applying the change;
    ``update_id`` names the cloud's update (EKS update id, GKE operation) when one was
    started; ``writes`` counts write calls that reached the cloud (retries included).
    """

    desired: int
    changed: bool
    in_progress: bool = False
    previous: int | None = None
    token: str = ""
    update_id: str | None = None
    writes: int = 0


def observation_from_error(
    error: ProviderError, *, placement: str, at: float
) -> ProviderObservation:
    """Return the engine's view of a failed ``describe``."""
    return ProviderObservation(
        placement=placement, at=at, error=error.kind, message=f"{error.code}: {error.message}"
    )


def idempotency_token(*parts: str | int) -> str:
    """Return a stable token for one intended change (same parts -> same token).

    Callers pass what identifies the intent (pool uid, placement, desired size, plan
    sequence), so a retry after a crash or a lost reply reuses the token and the cloud
    does not apply the change twice.
    """
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()
    return digest[:IDEMPOTENCY_TOKEN_MAX_CHARS]


@runtime_checkable
class CapacityProvider(Protocol):
    """One placement's node group in one cloud.

    Error contract: both methods raise only ``ProviderError`` subclasses
    (``crossfade.providers.errors``), never SDK errors.

    - ``describe`` raises ``NotFound`` when the node group does not exist,
      ``PermissionDenied`` when the identity may not read it, ``Throttled`` when the API
      (or the client-side rate limit) refuses the call, ``ProviderUnavailable`` on
      network failures and server errors that outlived the retries. Insufficient
      capacity is not an error of ``describe``: it shows in ``health_issues``.
    - ``scale`` raises the same, plus ``InvalidRequest`` when ``desired`` lies outside
      min..max, ``UpdateInProgress`` when the cloud refuses a concurrent update, and
      ``InsufficientCapacity`` when the cloud refuses the change for lack of capacity.
      ``scale`` is idempotent: the same ``token`` never applies a change twice, and asking
      for the size already asked for makes no write (``changed`` False).
    """

    @property
    def name(self) -> str:
        """Return a short human name of the target, such as ``eks/prod/gpu-a``."""
        ...

    async def describe(self) -> NodeGroupState:
        """Return the node group's current sizes, status and health issues."""
        ...

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        """Ask the cloud for ``desired`` nodes; ``token`` makes retries idempotent."""
        ...
