"""Narrow typed wrapper of the few boto3 calls crossfade makes, with limits, retries, typed errors.

Only the calls listed here are used (see docs/providers/aws.md for the matching IAM policy):
``eks:DescribeNodegroup``, ``eks:UpdateNodegroupConfig``, ``eks:DescribeUpdate`` and
``autoscaling:DescribeScalingActivities``; provisioning adds ``eks:CreateNodegroup``,
``eks:DeleteNodegroup``, ``eks:ListNodegroups`` (docs/providers/provisioning.md). Every call:

1. takes a token from the API's client-side bucket (or fails fast with ``Throttled``);
   reads (``Describe*``, ``List*``, ``Get*``) may only queue for ``READ_WAIT_SHARE`` of the
   wait a write may, so a crowd of describes can never take the tokens a scale or record
   change needs (writes move capacity and traffic; a refused read answers from cache),
2. runs the blocking boto3 call in a worker thread (``asyncio.to_thread``),
3. maps any SDK error onto a ``ProviderError``, and
4. is retried by tenacity (exponential backoff with full jitter) only when that error is
   retryable; the parameters, idempotency tokens included, are the same on every attempt.

Credentials come only from boto3's default chain (IRSA / EKS Pod Identity in a cluster).
The boto3 clients are shared (``AwsClients``): one Session per process and one client per
service, region and endpoint, whatever the number of placements; rate limits stay with
``AwsCaller``'s buckets, which the callers' ``RateLimiters`` decide.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

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
from crossfade.providers.ratelimit import DEFAULT_MAX_WAIT_S, RateLimiters

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.client import AutoScalingClient  # noqa: F401 (class bases)
    from mypy_boto3_autoscaling.type_defs import ActivityTypeDef
    from mypy_boto3_eks.client import EKSClient  # noqa: F401 (class bases)
    from mypy_boto3_eks.type_defs import (
        CreateNodegroupRequestTypeDef,
        ListNodegroupsResponseTypeDef,
        NodegroupScalingConfigTypeDef,
        NodegroupTypeDef,
        UpdateTypeDef,
    )

log = logging.getLogger(__name__)

EKS_API = "eks"
AUTOSCALING_API = "autoscaling"

RETRY_ATTEMPTS = 4
RETRY_BASE_S = 0.2
RETRY_MAX_WAIT_S = 4.0
# Retries of one call never take longer than this in total, so a reconcile stays bounded.
RETRY_BUDGET_S = 15.0
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
SCALING_ACTIVITIES_PAGE = 10
# Vendor messages are kept short in errors, status and logs (some endpoints answer HTML).
MESSAGE_MAX_CHARS = 300

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "NotFoundException", "404"})
PERMISSION_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "403",
    }
)
IN_USE_CODES = frozenset({"ResourceInUseException", "ResourceLimitExceededException"})
INVALID_CODES = frozenset(
    {
        "InvalidParameterException",
        "InvalidRequestException",
        "ValidationError",
        "ValidationException",
        "ClientException",
        "BadRequestException",
    }
)
# EC2 launch errors meaning "no capacity for that request right now" (Karpenter keeps the
# same list as unfulfillableCapacityErrorCodes). Matched in API error codes, EKS node group
# health issues and Auto Scaling activity messages alike.
INSUFFICIENT_CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientFreeAddresses",
        "InsufficientFreeAddressesInSubnet",
        "MaxSpotInstanceCountExceeded",
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        "UnfulfillableCapacity",
        "ReservationCapacityExceeded",
        "SpotMaxPriceTooLow",
    }
)
CONNECTION_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
)

T = TypeVar("T")
CallObserver = Callable[[str, str, str], None]
"""Called after every attempt with (api, operation, outcome code or "OK")."""


# Reads queue for at most this share of ``RetryPolicy.limiter_max_wait_s``; the rest of
# the queue (tokens reserved in advance) is left to writes. With the EKS bucket (5/s) and
# a 2 s wait, describes fill the queue 1 s ahead at most and a scale call still finds a
# slot within 2 s however many describes wait.
READ_WAIT_SHARE = 0.5
READ_OPERATION_PREFIXES = ("Describe", "List", "Get")


def is_read(operation: str) -> bool:
    """Whether ``operation`` (an AWS operation name) only reads."""
    return operation.startswith(READ_OPERATION_PREFIXES)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a retryable call is tried again (full-jitter backoff)."""

    attempts: int = RETRY_ATTEMPTS
    base_s: float = RETRY_BASE_S
    max_wait_s: float = RETRY_MAX_WAIT_S
    budget_s: float = RETRY_BUDGET_S
    limiter_max_wait_s: float = DEFAULT_MAX_WAIT_S


def mentions_insufficient_capacity(text: str) -> str | None:
    """Return the first insufficient-capacity code named in ``text``, if any."""
    for code in sorted(INSUFFICIENT_CAPACITY_CODES, key=len, reverse=True):
        if code in text:
            return code
    return None


def map_aws_error(error: BaseException, *, api: str, operation: str) -> ProviderError:
    """Return the typed provider error for an SDK (botocore) exception."""
    where = f"{api}:{operation}"
    if isinstance(error, ProviderError):
        return error
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(details.get("Code") or status or "Unknown")
        message = f"{where}: {str(details.get('Message') or code)[:MESSAGE_MAX_CHARS]}"
        return _map_code(code, status=int(status or 0), message=message)
    if isinstance(
        error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return PermissionDenied(
            f"{where}: no AWS credentials in the default chain", code="NoCredentials"
        )
    if isinstance(error, botocore.exceptions.ParamValidationError):
        return InvalidRequest(f"{where}: {error}", code="ParamValidation")
    if isinstance(error, CONNECTION_ERRORS):
        return ProviderUnavailable(
            f"{where}: {type(error).__name__}: {error}", code=type(error).__name__
        )
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return ProviderUnavailable(f"{where}: {type(error).__name__}", code=type(error).__name__)
    return ProviderUnavailable(
        f"{where}: unexpected {type(error).__name__}", code=type(error).__name__
    )


def _map_code(code: str, *, status: int, message: str) -> ProviderError:
    if code in THROTTLING_CODES or status == 429:
        return Throttled(message, code=code)
    if code in INSUFFICIENT_CAPACITY_CODES:
        return InsufficientCapacity(message, code=code)
    if code in NOT_FOUND_CODES:
        return NotFound(message, code=code)
    if code in PERMISSION_CODES:
        return PermissionDenied(message, code=code)
    if code in IN_USE_CODES:
        return UpdateInProgress(message, code=code)
    if code in INVALID_CODES:
        return InvalidRequest(message, code=code)
    if status >= 500 or status == 0:
        return ProviderUnavailable(message, code=code)
    if status == 404:
        return NotFound(message, code=code)
    if status == 403:
        return PermissionDenied(message, code=code)
    return InvalidRequest(message, code=code)


class _ClientRateLimited(Throttled):
    """crossfade's own bucket refused the call; a later reconcile may pass, this one won't."""


def _should_retry(error: BaseException) -> bool:
    # Retryable for the caller, but not in place: a call the local bucket refused would only
    # wait longer, and an update in progress takes minutes, not a backoff's seconds.
    return (
        isinstance(error, ProviderError)
        and error.retryable
        and not isinstance(error, _ClientRateLimited | UpdateInProgress)
    )


class AwsCaller:
    """Runs boto3 calls of one AWS API under its rate limit, retry policy and error mapping."""

    def __init__(
        self,
        *,
        api: str,
        limiters: RateLimiters,
        retry: RetryPolicy | None = None,
        observer: CallObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self._bucket = limiters.bucket(api)
        self._retry = retry or RetryPolicy()
        self._observer = observer
        self._sleep = sleep
        self.attempts: Counter[str] = Counter()

    async def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one boto3 call, parameters bound) with limits, retries, typed errors."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_should_retry),
            stop=stop_after_attempt(self._retry.attempts) | stop_after_delay(self._retry.budget_s),
            wait=wait_random_exponential(multiplier=self._retry.base_s, max=self._retry.max_wait_s),
            sleep=self._sleep,
            before_sleep=self._log_retry(operation),
            reraise=True,
        )
        return await retrying(self._attempt, operation, fn)

    def limiter_wait_s(self, operation: str) -> float:
        """How long ``operation`` may wait for a token (reads less; see READ_WAIT_SHARE)."""
        wait_s = self._retry.limiter_max_wait_s
        return wait_s * READ_WAIT_SHARE if is_read(operation) else wait_s

    async def _attempt(self, operation: str, fn: Callable[[], T]) -> T:
        if not await self._bucket.acquire(
            max_wait_s=self.limiter_wait_s(operation), sleep=self._sleep
        ):
            self._observe(operation, "ClientRateLimited")
            raise _ClientRateLimited(
                f"{self.api}:{operation}: client-side rate limit reached, call not sent",
                code="ClientRateLimited",
                retry_after_s=1 / self._bucket.rate_per_s,
            )
        self.attempts[operation] += 1
        try:
            result = await asyncio.to_thread(fn)
        except Exception as error:  # every SDK error is mapped, none leaves
            mapped = map_aws_error(error, api=self.api, operation=operation)
            self._observe(operation, mapped.code or type(mapped).__name__)
            raise mapped from error
        self._observe(operation, "OK")
        return result

    def _observe(self, operation: str, outcome: str) -> None:
        if self._observer is not None:
            self._observer(self.api, operation, outcome)

    def _log_retry(self, operation: str) -> Callable[[RetryCallState], None]:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "aws call failed, retrying",
                extra={
                    "api": self.api,
                    "operation": operation,
                    "attempt": state.attempt_number,
                    "error_code": getattr(error, "code", ""),
                    "wait_s": round(state.next_action.sleep, 3) if state.next_action else None,
                },
            )

        return log_retry


def client_config(*, read_timeout_s: float = READ_TIMEOUT_S) -> botocore.config.Config:
    """Return the botocore config: no SDK-level retries (tenacity retries), short timeouts."""
    return botocore.config.Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=read_timeout_s,
        user_agent_extra="crossfade",
    )


def make_session() -> boto3.session.Session:
    """Return a boto3 session on the default credential chain (never static keys)."""
    return boto3.session.Session()


ClientKey = tuple[str, str, str | None, float]
"""(service, region, endpoint URL, read timeout): what makes two boto3 clients differ."""


class AwsClients:
    """The process's boto3 clients: one Session, one client per service/region/endpoint.

    Each boto3 Session loads botocore's service models anew (about 18 MiB for EKS plus Auto
    Scaling), so a Session per placement made the operator's memory grow with its pools.
    Clients are thread-safe and shared by every placement of the same region; Sessions are
    not, so clients are created under a lock. Creating the first client of a key costs
    0.3-1 s of CPU: ``client`` is therefore called from the worker thread of the first API
    call (``_ServiceApi``), never on the event loop. Rate limits are not kept here: the
    token buckets stay with the callers (``AwsCaller``), whatever client they share.
    """

    def __init__(
        self, *, session_factory: Callable[[], boto3.session.Session] = make_session
    ) -> None:
        self._session_factory = session_factory
        self._session: boto3.session.Session | None = None
        self._clients: dict[ClientKey, Any] = {}
        self._lock = threading.Lock()

    def client(
        self,
        service: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> Any:
        """Return the shared client of ``service`` in ``region``, creating it on first use."""
        key: ClientKey = (service, region, endpoint_url, read_timeout_s)
        found = self._clients.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                if self._session is None:
                    self._session = self._session_factory()
                found = self._session.client(  # type: ignore[call-overload]
                    service,
                    region_name=region,
                    endpoint_url=endpoint_url,
                    config=client_config(read_timeout_s=read_timeout_s),
                )
                self._clients[key] = found
                log.info(
                    "aws client created",
                    extra={"api": service, "region": region, "clients": len(self._clients)},
                )
            return found

    @property
    def count(self) -> int:
        """How many clients exist (one per service/region/endpoint/timeout in use)."""
        return len(self._clients)


PROCESS_CLIENTS = AwsClients()
"""The clients every placement of this process shares unless it is given its own."""


ClientT = TypeVar("ClientT")


class _ServiceApi(Generic[ClientT]):
    """One AWS service in one region, with rate limits, retries and typed errors.

    ``client`` is either a boto3 client or a callable returning it; the callable is only
    called inside the worker thread of an API call, so building an API object never blocks
    the event loop on boto3's client creation.
    """

    SERVICE: ClassVar[str]  # the boto3 service name, also the rate-limiter's API name

    def __init__(
        self,
        *,
        client: ClientT | Callable[[], ClientT],
        limiters: RateLimiters,
        retry: RetryPolicy | None = None,
        observer: CallObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client_source: Callable[[], ClientT] = (
            client if callable(client) else functools.partial(_same, client)
        )
        self.caller = AwsCaller(
            api=self.SERVICE, limiters=limiters, retry=retry, observer=observer, sleep=sleep
        )

    @property
    def _client(self) -> ClientT:
        # Read only inside ``caller.call``'s worker thread (see the class docstring).
        return self._client_source()

    @classmethod
    def create(
        cls,
        *,
        region: str,
        limiters: RateLimiters,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        clients: AwsClients | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        **options: Any,
    ) -> Self:
        """Return the API on the shared client of ``region`` (``endpoint_url`` for tests).

        The client comes from ``clients`` (default: the process's ``PROCESS_CLIENTS``) and is
        created lazily by the first call; ``session`` instead creates a client of its own
        now, for callers that manage a Session themselves.
        """
        if session is not None:
            own = session.client(  # type: ignore[call-overload]
                cls.SERVICE,
                region_name=region,
                endpoint_url=endpoint_url,
                config=client_config(read_timeout_s=read_timeout_s),
            )
            return cls(client=own, limiters=limiters, **options)
        source = functools.partial(
            (clients if clients is not None else PROCESS_CLIENTS).client,
            cls.SERVICE,
            region=region,
            endpoint_url=endpoint_url,
            read_timeout_s=read_timeout_s,
        )
        return cls(client=source, limiters=limiters, **options)


def _same(value: T) -> T:
    return value


class EksApi(_ServiceApi["EKSClient"]):
    """The EKS calls crossfade uses, typed; one instance per region."""

    SERVICE = EKS_API

    async def describe_nodegroup(self, *, cluster: str, nodegroup: str) -> NodegroupTypeDef:
        response = await self.caller.call(
            "DescribeNodegroup",
            lambda: self._client.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup),
        )
        return response["nodegroup"]

    async def update_nodegroup_scaling(
        self, *, cluster: str, nodegroup: str, scaling: NodegroupScalingConfigTypeDef, token: str
    ) -> UpdateTypeDef:
        """Start a ConfigUpdate of the scaling config; ``token`` is the idempotency token."""
        response = await self.caller.call(
            "UpdateNodegroupConfig",
            lambda: self._client.update_nodegroup_config(
                clusterName=cluster,
                nodegroupName=nodegroup,
                scalingConfig=scaling,
                clientRequestToken=token,
            ),
        )
        return response["update"]

    async def describe_update(
        self, *, cluster: str, nodegroup: str, update_id: str
    ) -> UpdateTypeDef:
        response = await self.caller.call(
            "DescribeUpdate",
            lambda: self._client.describe_update(
                name=cluster, nodegroupName=nodegroup, updateId=update_id
            ),
        )
        return response["update"]

    async def create_nodegroup(self, request: CreateNodegroupRequestTypeDef) -> NodegroupTypeDef:
        """Create a managed node group; ``request`` carries its ``clientRequestToken``."""
        response = await self.caller.call(
            "CreateNodegroup", lambda: self._client.create_nodegroup(**request)
        )
        return response["nodegroup"]

    async def delete_nodegroup(self, *, cluster: str, nodegroup: str) -> NodegroupTypeDef:
        response = await self.caller.call(
            "DeleteNodegroup",
            lambda: self._client.delete_nodegroup(clusterName=cluster, nodegroupName=nodegroup),
        )
        return response["nodegroup"]

    async def list_nodegroups(self, *, cluster: str) -> list[str]:
        """Return every node group name of the cluster (all pages)."""
        names: list[str] = []
        token = ""
        while True:
            response = await self.caller.call(
                "ListNodegroups", functools.partial(self._list_page, cluster=cluster, token=token)
            )
            names.extend(response.get("nodegroups", []))
            token = response.get("nextToken", "")
            if not token:
                return names

    def _list_page(self, *, cluster: str, token: str) -> ListNodegroupsResponseTypeDef:
        if token:
            return self._client.list_nodegroups(clusterName=cluster, nextToken=token)
        return self._client.list_nodegroups(clusterName=cluster)


class AutoScalingApi(_ServiceApi["AutoScalingClient"]):
    """The Auto Scaling calls crossfade uses, typed; one instance per region."""

    SERVICE = AUTOSCALING_API

    async def recent_scaling_activities(self, *, group: str) -> list[ActivityTypeDef]:
        """Return the newest scaling activities of one Auto Scaling group, newest first."""
        response = await self.caller.call(
            "DescribeScalingActivities",
            lambda: self._client.describe_scaling_activities(
                AutoScalingGroupName=group, MaxRecords=SCALING_ACTIVITIES_PAGE
            ),
        )
        return list(response.get("Activities", []))
