"""GKE node pool provider on the official google-cloud-container client (ADC / Workload Identity).

How a GKE node pool maps onto ``NodeGroupState``:

- Autoscaled pools (the usual GPU setup): crossfade owns the autoscaler's floor. ``scale``
  sets ``minNodeCount`` (raising ``maxNodeCount`` if needed) with ``setAutoscaling``, and
  ``describe`` reads the floor back, so the desired size survives an operator restart.
- Fixed-size pools: ``scale`` calls ``setSize``. The GKE API does not report a pool's current
  size (Google points to the Kubernetes API for that), so ``describe`` reports the size this
  provider last requested, or ``initialNodeCount`` before the first request.

Sizes are totals across the pool's zones; GKE counts per zone, so a total is rounded up to a
multiple of the zone count. ``ready`` is None: readiness comes from the cluster's Nodes.
Blocking client calls run in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as google_auth_exceptions
from google.cloud import container_v1

from crossfade.providers.base import HealthIssue, NodeGroupState, ScaleResult
from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    Throttled,
    UpdateInProgress,
)
from crossfade.providers.registry import placement_member

if TYPE_CHECKING:
    from crossfade.providers.registry import ProviderContext

log = logging.getLogger(__name__)

PROVIDER_TYPE = "GKENodePool"
PLACEMENT_MEMBER = "gkeNodePool"
OPERATION_WAIT_S = 10.0
OPERATION_POLL_INTERVAL_S = 2.0
API_CALL_TIMEOUT_S = 30.0
DEFAULT_MAX_NODES = 1000
# Vendor codes that mean "the zone has no capacity for this shape right now" (GCE stockout)
# or "the project may not have more of it" (quota); both send crossfade elsewhere.
INSUFFICIENT_CAPACITY_CONDITION_CODES = frozenset(
    {
        container_v1.StatusCondition.Code.GCE_STOCKOUT,
        container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED,
    }
)
INSUFFICIENT_CAPACITY_MARKERS = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "does not have enough resources available",
    "GCE_STOCKOUT",
    "Insufficient regional quota",
    "QUOTA_EXCEEDED",
)
BUSY_MARKER = "incompatible operation"
UPDATING_STATUSES = frozenset(
    {
        container_v1.NodePool.Status.PROVISIONING,
        container_v1.NodePool.Status.RECONCILING,
        container_v1.NodePool.Status.STOPPING,
    }
)

T = TypeVar("T")


@dataclass(frozen=True)
class GKENodePoolRef:
    """Where a GKE node pool lives; ``location`` is a region or a zone."""

    project: str
    location: str
    cluster: str
    node_pool: str

    @property
    def name(self) -> str:
        return (
            f"projects/{self.project}/locations/{self.location}"
            f"/clusters/{self.cluster}/nodePools/{self.node_pool}"
        )

    def operation_name(self, operation_id: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/operations/{operation_id}"


def is_insufficient_capacity_message(message: str) -> bool:
    """Return True when a GKE/GCE message reports a stockout or exhausted quota."""
    return any(marker in message for marker in INSUFFICIENT_CAPACITY_MARKERS)


def map_google_error(error: Exception, *, what: str) -> ProviderError:
    """Translate a google-api-core / transport error into crossfade's typed provider errors."""
    message = f"{what}: {getattr(error, 'message', None) or error}"
    code = str(getattr(error, "code", "") or "")
    if isinstance(error, google_exceptions.GoogleAPICallError) and error.grpc_status_code:
        code = error.grpc_status_code.name
    if isinstance(error, google_exceptions.NotFound):
        return NotFound(message, code=code)
    if isinstance(error, google_exceptions.Forbidden | google_exceptions.Unauthorized):
        return PermissionDenied(message, code=code)
    if is_insufficient_capacity_message(message):
        return InsufficientCapacity(message, code="ZONE_RESOURCE_POOL_EXHAUSTED")
    if isinstance(error, google_exceptions.TooManyRequests):
        return Throttled(message, code=code)
    if isinstance(error, google_exceptions.BadRequest):
        if BUSY_MARKER in message:
            # Another operation is running on the pool: try again once it has finished.
            return UpdateInProgress(message, code=code)
        return InvalidRequest(message, code=code)
    return ProviderUnavailable(message, code=code)


async def call_google(what: str, call: Callable[[], T]) -> T:
    """Run one blocking client call in a thread; only typed ``ProviderError``s leave."""
    try:
        return await asyncio.to_thread(call)
    except google_exceptions.GoogleAPIError as error:
        raise map_google_error(error, what=what) from error
    except google_auth_exceptions.TransportError as error:  # token endpoint unreachable
        raise ProviderUnavailable(f"{what}: credentials: {error}") from error
    except google_auth_exceptions.GoogleAuthError as error:  # ADC refresh refused
        raise PermissionDenied(
            f"{what}: credentials: {error}", code="CredentialsRefreshFailed"
        ) from error
    except OSError as error:  # connection refused / reset before any HTTP status
        raise ProviderUnavailable(f"{what}: {error}") from error


class GKENodePoolProvider:
    """``CapacityProvider`` for one GKE node pool."""

    def __init__(
        self,
        *,
        ref: GKENodePoolRef,
        client: container_v1.ClusterManagerClient,
        max_nodes: int = DEFAULT_MAX_NODES,
        operation_wait_s: float = OPERATION_WAIT_S,
        poll_interval_s: float = OPERATION_POLL_INTERVAL_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        owns_client: bool = True,
    ) -> None:
        self.ref = ref
        self._client = client
        # False for the process's shared client (``shared_client``): other placements use it.
        self._owns_client = owns_client
        self._max_nodes = max_nodes
        self._operation_wait_s = operation_wait_s
        self._poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock
        self._requested_total: int | None = None
        self._operation_by_token: dict[str, str] = {}
        self._pending_operation: str | None = None
        self._last_operation_error = ""

    @property
    def name(self) -> str:
        return f"gke/{self.ref.project}/{self.ref.cluster}/{self.ref.node_pool}"

    def adopt_observed_size(self, total: int) -> None:
        """Take the pool's current size from its Nodes until this process requests one.

        GKE's API does not report a fixed-size pool's current size, so a restarted operator
        would otherwise compare with ``initialNodeCount`` and resend a setSize already done.
        """
        if self._requested_total is None and total >= 0:
            self._requested_total = total

    async def aclose(self) -> None:
        """Close the client's HTTP session, unless the client is the process's shared one."""
        if self._owns_client:
            await asyncio.to_thread(self._client.transport.close)

    async def _call(self, what: str, call: Callable[[], T]) -> T:
        return await call_google(what, call)

    async def _get_pool(self) -> container_v1.NodePool:
        return await self._call(
            f"get node pool {self.ref.name}",
            lambda: self._client.get_node_pool(
                request={"name": self.ref.name}, retry=None, timeout=API_CALL_TIMEOUT_S
            ),
        )

    async def _get_operation(self, operation_id: str) -> container_v1.Operation:
        name = self.ref.operation_name(operation_id)
        return await self._call(
            f"get operation {name}",
            lambda: self._client.get_operation(
                request={"name": name}, retry=None, timeout=API_CALL_TIMEOUT_S
            ),
        )

    async def _refresh_pending_operation(self) -> bool:
        """Poll the last scale operation once; return True while it still runs."""
        if self._pending_operation is None:
            return False
        operation = await self._get_operation(self._pending_operation)
        if operation.status != container_v1.Operation.Status.DONE:
            return True
        self._last_operation_error = operation.error.message if operation.error else ""
        self._pending_operation = None
        return False

    async def describe(self) -> NodeGroupState:
        pool = await self._get_pool()
        operation_running = await self._refresh_pending_operation()
        zones = max(1, len(pool.locations))
        autoscaling = pool.autoscaling
        if autoscaling.enabled:
            min_size = _total(autoscaling.total_min_node_count, autoscaling.min_node_count, zones)
            max_size = _total(autoscaling.total_max_node_count, autoscaling.max_node_count, zones)
            desired = min_size
        else:
            min_size, max_size = 0, self._max_nodes
            requested = self._requested_total
            desired = pool.initial_node_count * zones if requested is None else requested
        issues = [
            HealthIssue(
                code=condition.code.name,
                message=condition.message,
                insufficient_capacity=condition.code in INSUFFICIENT_CAPACITY_CONDITION_CODES,
            )
            for condition in pool.conditions
        ]
        if self._last_operation_error and not issues:
            issues.append(
                HealthIssue(
                    code="OperationFailed",
                    message=self._last_operation_error,
                    insufficient_capacity=is_insufficient_capacity_message(
                        self._last_operation_error
                    ),
                )
            )
        return NodeGroupState(
            desired=desired,
            min_size=min_size,
            max_size=max_size,
            ready=None,
            status=container_v1.NodePool.Status(pool.status).name,
            updating=operation_running or pool.status in UPDATING_STATUSES,
            health_issues=tuple(issues),
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        if desired < 0:
            raise InvalidRequest(f"desired size must be >= 0, got {desired}")
        known = self._operation_by_token.get(token)
        if known is not None:
            # Same token: the same request again. GKE has no idempotency token, so the
            # provider remembers which operation the token started instead of resubmitting.
            return await self._wait(known, desired=desired, changed=False, token=token)
        pool = await self._get_pool()
        zones = max(1, len(pool.locations))
        per_zone = math.ceil(desired / zones)
        if pool.autoscaling.enabled:
            previous = pool.autoscaling.min_node_count * zones
            max_per_zone = pool.autoscaling.max_node_count
        else:
            requested = self._requested_total
            previous = pool.initial_node_count * zones if requested is None else requested
            max_per_zone = self._max_nodes // zones
        if per_zone > max_per_zone:
            raise InvalidRequest(
                f"{self.name}: desired {desired} exceeds the pool's maximum "
                f"{max_per_zone * zones} ({zones} zone(s))"
            )
        if per_zone * zones == previous and not self._pending_operation:
            return ScaleResult(desired=previous, changed=False, previous=previous, token=token)
        if pool.autoscaling.enabled:
            scaling = container_v1.NodePoolAutoscaling(
                enabled=True,
                min_node_count=per_zone,
                max_node_count=pool.autoscaling.max_node_count,
                location_policy=pool.autoscaling.location_policy,
            )
            operation = await self._call(
                f"set autoscaling of {self.ref.name}",
                lambda: self._client.set_node_pool_autoscaling(
                    request=container_v1.SetNodePoolAutoscalingRequest(
                        name=self.ref.name, autoscaling=scaling
                    ),
                    retry=None,
                    timeout=API_CALL_TIMEOUT_S,
                ),
            )
        else:
            operation = await self._call(
                f"set size of {self.ref.name}",
                lambda: self._client.set_node_pool_size(
                    request=container_v1.SetNodePoolSizeRequest(
                        name=self.ref.name, node_count=per_zone
                    ),
                    retry=None,
                    timeout=API_CALL_TIMEOUT_S,
                ),
            )
            self._requested_total = per_zone * zones
        log.info(
            "gke scale requested",
            extra={"node_pool": self.ref.name, "desired": per_zone * zones, "op": operation.name},
        )
        self._operation_by_token[token] = operation.name
        self._pending_operation = operation.name
        self._last_operation_error = ""
        return await self._wait(
            operation.name, desired=per_zone * zones, changed=True, token=token, previous=previous
        )

    async def _wait(
        self,
        operation_id: str,
        *,
        desired: int,
        changed: bool,
        token: str,
        previous: int | None = None,
    ) -> ScaleResult:
        """Poll the operation for up to ``operation_wait_s``; raise if it failed."""
        deadline = self._clock() + self._operation_wait_s
        while True:
            operation = await self._get_operation(operation_id)
            if operation.status == container_v1.Operation.Status.DONE:
                if self._pending_operation == operation_id:
                    self._pending_operation = None
                error = operation.error.message if operation.error else ""
                if error:
                    self._last_operation_error = error
                    if is_insufficient_capacity_message(error):
                        raise InsufficientCapacity(
                            f"resize of {self.ref.name}: {error}",
                            code="ZONE_RESOURCE_POOL_EXHAUSTED",
                        )
                    raise ProviderUnavailable(f"resize of {self.ref.name}: {error}")
                return self._result(desired, changed, token, operation_id, previous, False)
            if self._clock() >= deadline:
                return self._result(desired, changed, token, operation_id, previous, True)
            await self._sleep(self._poll_interval_s)

    @staticmethod
    def _result(
        desired: int,
        changed: bool,
        token: str,
        operation_id: str,
        previous: int | None,
        in_progress: bool,
    ) -> ScaleResult:
        return ScaleResult(
            desired=desired,
            changed=changed,
            in_progress=in_progress,
            previous=previous,
            token=token,
            update_id=operation_id,
            writes=1 if changed else 0,
        )


def _total(total_count: int, per_zone_count: int, zones: int) -> int:
    return total_count if total_count else per_zone_count * zones


def make_client(*, endpoint: str | None = None, credentials: Any = None) -> Any:
    """Build a REST ``ClusterManagerClient``; ``credentials=None`` means ADC / Workload Identity."""
    from google.api_core.client_options import ClientOptions

    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    return container_v1.ClusterManagerClient(
        transport="rest", credentials=credentials, client_options=options
    )


# (endpoint, credentials) -> the process's client for them; see ``shared_client``.
_SHARED_CLIENTS: dict[tuple[str | None, Any], Any] = {}


def shared_client(*, endpoint: str | None = None, credentials: Any = None) -> Any:
    """The process's ``ClusterManagerClient`` for this endpoint and credentials.

    One client serves every GKE placement of the operator, as one boto3 client per service
    serves every EKS placement: a client per placement cost ~75 KiB of Python objects each
    (its wrapped methods, a requests session and its connection pool), per pool. The REST
    transport is requests over urllib3, whose connection pool is thread-safe, so the
    ``asyncio.to_thread`` calls of many placements may share it. Credentials are compared by
    identity (a ``ProviderContext`` keeps one object). A client that cannot be built (no
    ADC) is not remembered: the next placement tries again.
    """
    key = (endpoint, credentials)
    client = _SHARED_CLIENTS.get(key)
    if client is None:
        client = _SHARED_CLIENTS[key] = make_client(endpoint=endpoint, credentials=credentials)
    return client


def build(placement: Mapping[str, Any], context: ProviderContext) -> GKENodePoolProvider:
    """Registry factory: the provider of one ``GKENodePool`` placement (wire form)."""
    member = placement_member(placement, PLACEMENT_MEMBER)
    try:
        ref = GKENodePoolRef(
            project=str(member["project"]),
            location=str(member["location"]),
            cluster=str(member["cluster"]),
            node_pool=str(member["nodePool"]),
        )
    except KeyError as missing:
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks {missing}"
        ) from None
    try:
        gke_client = shared_client(
            endpoint=context.gke_endpoint, credentials=context.gke_credentials
        )
    except google_auth_exceptions.DefaultCredentialsError as error:
        raise PermissionDenied(
            f"{ref.name}: no Application Default Credentials ({error})", code="NoCredentials"
        ) from None
    max_nodes = int((placement.get("nodes") or {}).get("max") or DEFAULT_MAX_NODES)
    return GKENodePoolProvider(ref=ref, client=gke_client, max_nodes=max_nodes, owns_client=False)
