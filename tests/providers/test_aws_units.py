"""Pure parts of the AWS provider: error mapping, ICE classification, token bucket, tokens."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossfade.engine.observations import ProviderErrorKind
from crossfade.providers.aws_api import (
    INSUFFICIENT_CAPACITY_CODES,
    READ_WAIT_SHARE,
    AwsCaller,
    RetryPolicy,
    map_aws_error,
)
from crossfade.providers.aws_eks import classify_health_issue, issues_from_activities
from crossfade.providers.base import (
    IDEMPOTENCY_TOKEN_MAX_CHARS,
    idempotency_token,
    observation_from_error,
)
from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderUnavailable,
    Throttled,
    UpdateInProgress,
)
from crossfade.providers.ratelimit import BucketSpec, RateLimiters, TokenBucket


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DescribeNodegroup",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ThrottlingException", 429, Throttled),
        ("Throttling", 400, Throttled),
        ("PriorRequestNotComplete", 400, Throttled),
        ("ResourceNotFoundException", 404, NotFound),
        ("AccessDeniedException", 403, PermissionDenied),
        ("ResourceInUseException", 409, UpdateInProgress),
        ("InvalidParameterException", 400, InvalidRequest),
        ("InsufficientInstanceCapacity", 500, InsufficientCapacity),
        ("ServerException", 500, ProviderUnavailable),
        ("ServiceUnavailableException", 503, ProviderUnavailable),
        ("SomethingNew", 418, InvalidRequest),
    ],
)
def test_client_errors_map_to_typed_errors(code: str, status: int, expected: type) -> None:
    mapped = map_aws_error(client_error(code, status), api="eks", operation="DescribeNodegroup")
    assert type(mapped) is expected
    assert mapped.code == code


def test_retryable_only_where_trying_again_can_help() -> None:
    retryable = {
        code
        for code, status in [
            ("ThrottlingException", 429),
            ("ServerException", 500),
            ("ResourceInUseException", 409),
            ("ResourceNotFoundException", 404),
            ("AccessDeniedException", 403),
            ("InsufficientInstanceCapacity", 500),
        ]
        if map_aws_error(client_error(code, status), api="eks", operation="x").retryable
    }
    assert retryable == {"ThrottlingException", "ServerException", "ResourceInUseException"}


def test_connection_errors_and_missing_credentials() -> None:
    unreachable = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(map_aws_error(unreachable, api="eks", operation="x"), ProviderUnavailable)
    no_keys = map_aws_error(botocore.exceptions.NoCredentialsError(), api="eks", operation="x")
    assert (
        isinstance(no_keys, PermissionDenied)
        and no_keys.kind is ProviderErrorKind.PERMISSION_DENIED
    )


@pytest.mark.parametrize(
    ("code", "message", "ice"),
    [
        ("InsufficientFreeAddresses", "subnet-1 has no free IPs", True),
        ("AsgInstanceLaunchFailures", "InsufficientInstanceCapacity - no p5 in use1-az1", True),
        ("AsgInstanceLaunchFailures", "VcpuLimitExceeded - you have requested more vCPU", True),
        ("AsgInstanceLaunchFailures", "InvalidKeyPair.NotFound - key gone", False),
        ("Ec2SecurityGroupNotFound", "sg-1 InsufficientInstanceCapacity", False),
        ("AccessDenied", "the node role cannot be assumed", False),
    ],
)
def test_health_issue_classification(code: str, message: str, ice: bool) -> None:
    assert classify_health_issue(code, message).insufficient_capacity is ice


def test_every_ice_code_is_recognised_inside_a_launch_failure() -> None:
    for code in INSUFFICIENT_CAPACITY_CODES:
        issue = classify_health_issue("AsgInstanceLaunchFailures", f"Could not launch. {code} - x")
        assert issue.insufficient_capacity, code


def test_activities_older_than_the_scale_up_are_ignored() -> None:
    def activity(at: float, status: str, message: str) -> dict[str, object]:
        return {
            "StartTime": datetime.fromtimestamp(at, tz=UTC),
            "StatusCode": status,
            "StatusMessage": message,
        }

    activities = [
        activity(900, "Failed", "InsufficientInstanceCapacity - old"),
        activity(1000, "Failed", "InsufficientInstanceCapacity - new"),
        activity(1001, "Successful", ""),
        activity(1002, "Failed", "InvalidAMIID.NotFound"),
    ]
    issues = issues_from_activities(activities, group="asg-1", since=1000)  # type: ignore[arg-type]
    assert [(i.code, i.insufficient_capacity) for i in issues] == [
        ("InsufficientInstanceCapacity", True),
        ("AsgScalingActivityFailed", False),
    ]


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_grants_burst_then_refills_at_its_rate() -> None:
    ticks = Ticks()
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=ticks)
    assert [bucket.reserve(max_wait_s=0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(max_wait_s=0) is None
    assert bucket.reserve(max_wait_s=1.0) == pytest.approx(0.5)
    assert bucket.reserve(max_wait_s=0.5) is None  # would be 1.0 s: refused, nothing taken
    ticks.now = 10.0
    assert bucket.tokens == pytest.approx(3.0)


@given(
    rate=st.floats(min_value=0.1, max_value=20),
    burst=st.integers(min_value=1, max_value=20),
    steps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_bucket_never_grants_more_than_burst_plus_refill(
    rate: float, burst: int, steps: list[float]
) -> None:
    ticks = Ticks()
    bucket = TokenBucket(rate_per_s=rate, burst=burst, clock=ticks)
    granted = 0
    for step in steps:
        ticks.now += step
        if bucket.reserve(max_wait_s=0) is not None:
            granted += 1
    assert granted <= burst + rate * ticks.now + 1e-9


async def test_reads_leave_the_end_of_the_queue_to_writes() -> None:
    """However many describes queue for tokens, a scale call still gets one in time."""
    ticks = Ticks()  # frozen: every grant is a reservation in advance
    rate, burst, max_wait_s = 5.0, 2, 2.0
    caller = AwsCaller(
        api="eks",
        limiters=RateLimiters({"eks": BucketSpec(rate_per_s=rate, burst=burst)}, clock=ticks),
        retry=RetryPolicy(limiter_max_wait_s=max_wait_s),
        sleep=_no_sleep,
    )

    async def outcome(operation: str) -> str:
        try:
            return await caller.call(operation, lambda: "sent")
        except Throttled as error:
            return str(error.code)

    reads = [await outcome("DescribeNodegroup") for _ in range(20)]
    writes = [await outcome("UpdateNodegroupConfig") for _ in range(10)]
    assert reads[-1] == "ClientRateLimited" and writes[0] == "sent"
    granted_reads = burst + int(rate * max_wait_s * READ_WAIT_SHARE)
    assert reads.count("sent") == granted_reads
    assert set(reads[granted_reads:]) == {"ClientRateLimited"}
    granted_writes = int(rate * max_wait_s * (1 - READ_WAIT_SHARE))
    assert writes[:granted_writes] == ["sent"] * granted_writes
    assert set(writes[granted_writes:]) == {"ClientRateLimited"}
    assert caller.attempts == {
        "DescribeNodegroup": granted_reads,
        "UpdateNodegroupConfig": granted_writes,
    }


async def _no_sleep(_seconds: float) -> None:
    return None


def test_idempotency_token_is_stable_and_fits_eks() -> None:
    token = idempotency_token("uid-1", "aws-a", 5, 7)
    assert token == idempotency_token("uid-1", "aws-a", 5, 7)
    assert token != idempotency_token("uid-1", "aws-a", 6, 7)
    assert len(token) <= IDEMPOTENCY_TOKEN_MAX_CHARS


def test_failed_describe_becomes_an_observation_with_the_error_kind() -> None:
    error = map_aws_error(client_error("ThrottlingException", 429), api="eks", operation="x")
    observation = observation_from_error(error, placement="aws-a", at=5.0)
    assert observation.error is ProviderErrorKind.THROTTLED
    assert observation.desired is None and observation.at == 5.0
    assert observation.message.startswith("ThrottlingException: ")
