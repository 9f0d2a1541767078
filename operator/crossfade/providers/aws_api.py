"""Narrow typed wrapper of the few boto3 calls crossfade makes, with limits, retries, typed errors.

Only the calls listed here are used (see docs/providers/aws.md for the matching IAM policy):
``eks:DescribeNodegroup``, ``eks:UpdateNodegroupConfig``, ``eks:DescribeUpdate`` and
``autoscaling:DescribeScalingActivities``; provisioning adds ``eks:CreateNodegroup``,
``eks:DeleteNodegroup``, ``eks:ListNodegroups`` (docs/providers/provisioning.md). Every call:

1. takes a token from the API's client-side bucket (or fails fast with ``Throttled``),
2. runs the blocking boto3 call in a worker thread (``asyncio.to_thread``),
3. maps any SDK error onto a ``ProviderError``, and
4. is retried by tenacity (exponential backoff with full jitter) only when that error is
   retryable; the parameters, idempotency tokens included, are the same on every attempt.

Credentials come only from boto3's default chain (IRSA / EKS Pod Identity in a cluster).
"""

from __future__ import annotations

import asyncio
import functools
import logging
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

    async def _attempt(self, operation: str, fn: Callable[[], T]) -> T:
        if not await self._bucket.acquire(
            max_wait_s=self._retry.limiter_max_wait_s, sleep=self._sleep
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


ClientT = TypeVar("ClientT")


class _ServiceApi(Generic[ClientT]):
    """One boto3 client of one AWS service, with rate limits, retries and typed errors."""

    SERVICE: ClassVar[str]  # the boto3 service name, also the rate-limiter's API name

    def __init__(
        self,
        *,
        client: ClientT,
        limiters: RateLimiters,
        retry: RetryPolicy | None = None,
        observer: CallObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self.caller = AwsCaller(
            api=self.SERVICE, limiters=limiters, retry=retry, observer=observer, sleep=sleep
        )

    @classmethod
    def create(
        cls,
        *,
        region: str,
        limiters: RateLimiters,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        **options: Any,
    ) -> Self:
        """Build the client from the default credential chain (``endpoint_url`` for tests)."""
        client = (session or make_session()).client(  # type: ignore[call-overload]
            cls.SERVICE,
            region_name=region,
            endpoint_url=endpoint_url,
            config=client_config(read_timeout_s=read_timeout_s),
        )
        return cls(client=client, limiters=limiters, **options)


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
