"""EKS provider against a moto server over real HTTP, through a fault-injecting proxy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crossfade.engine.observations import ProviderErrorKind
from crossfade.providers.aws_api import RETRY_ATTEMPTS, AwsClients, RetryPolicy
from crossfade.providers.aws_eks import (
    DESCRIBE_BUDGET_SHARE,
    DESCRIBE_CACHE_TTL_S,
    SETTLING_BUDGET_SHARE,
    SETTLING_CACHE_TTL_S,
    STALE_INTERVALS,
    AwsProviderContext,
    EksNodeGroupProvider,
    EksNodeGroupRef,
    build_eks_provider,
)
from crossfade.providers.base import CapacityProvider, idempotency_token
from crossfade.providers.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderUnavailable,
    Throttled,
    UpdateInProgress,
)
from crossfade.providers.ratelimit import BucketSpec, RateLimiters
from crossfade.testing import moto_state
from crossfade.testing.aws_faults import Fault, FaultProxy
from tests.providers.conftest import REGION, FakeClock, ProviderFactory, RecordingSleep


def _ng(ref: EksNodeGroupRef) -> dict[str, str]:
    return {"region": ref.region, "cluster": ref.cluster, "nodegroup": ref.nodegroup}


async def test_describe_reads_sizes_and_status(make_provider: ProviderFactory) -> None:
    provider = make_provider()
    assert isinstance(provider, CapacityProvider)
    state = await provider.describe()
    assert (state.desired, state.min_size, state.max_size) == (2, 0, 10)
    assert state.status == "ACTIVE"
    assert state.ready is None
    assert not state.updating
    assert state.health_issues == ()


async def test_scale_sends_token_and_changes_desired_size(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    provider = make_provider()
    token = idempotency_token("pool-uid", "aws-a", 5, 1)
    result = await provider.scale(desired=5, token=token)
    assert result.changed and result.previous == 2 and result.desired == 5
    assert result.writes == 1 and result.update_id
    [update] = fault_proxy.requests("UpdateNodegroupConfig")
    assert update.json()["clientRequestToken"] == token
    assert update.json()["scalingConfig"] == {"desiredSize": 5}
    clock.advance(DESCRIBE_CACHE_TTL_S)
    assert (await provider.describe()).desired == 5


async def test_scale_to_current_size_makes_no_write(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    result = await make_provider().scale(desired=2, token="t-same")
    assert not result.changed and result.writes == 0
    assert fault_proxy.requests("UpdateNodegroupConfig") == []


async def test_scale_outside_min_max_is_refused_before_any_write(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await make_provider().scale(desired=11, token="t-big")
    assert caught.value.code == "DesiredOutsideMinMax"
    assert fault_proxy.requests("UpdateNodegroupConfig") == []


async def test_lost_reply_is_retried_with_the_same_token(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, recorded_sleep: RecordingSleep
) -> None:
    fault_proxy.add(Fault(kind="lost_reply", operation="UpdateNodegroupConfig", status=503))
    result = await make_provider().scale(desired=4, token="t-lost-reply")
    updates = fault_proxy.requests("UpdateNodegroupConfig")
    assert [u.status for u in updates] == [503, 200]
    assert {u.json()["clientRequestToken"] for u in updates} == {"t-lost-reply"}
    assert result.writes == 2 and result.changed
    assert len(recorded_sleep.delays) == 1


async def test_server_errors_are_retried_with_full_jitter_then_succeed(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, recorded_sleep: RecordingSleep
) -> None:
    fault_proxy.add(Fault(kind="server_error", operation="DescribeNodegroup", times=2))
    state = await make_provider().describe()
    assert state.desired == 2
    assert [r.status for r in fault_proxy.requests("DescribeNodegroup")] == [500, 500, 200]
    policy = RetryPolicy()
    for attempt, delay in enumerate(recorded_sleep.delays, start=1):
        assert 0 <= delay <= min(policy.max_wait_s, policy.base_s * 2**attempt)


async def test_persistent_server_errors_become_provider_unavailable(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(Fault(kind="server_error", operation="DescribeNodegroup", times=99, status=502))
    with pytest.raises(ProviderUnavailable) as caught:
        await make_provider().describe()
    assert caught.value.retryable
    assert len(fault_proxy.requests("DescribeNodegroup")) == RETRY_ATTEMPTS


async def test_persistent_throttling_reports_throttled(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(Fault(kind="throttle", operation="DescribeNodegroup", times=99))
    with pytest.raises(Throttled) as caught:
        await make_provider().describe()
    assert caught.value.code == "ThrottlingException"
    assert caught.value.kind is ProviderErrorKind.THROTTLED
    assert len(fault_proxy.requests("DescribeNodegroup")) == RETRY_ATTEMPTS


async def test_empty_client_bucket_reports_throttled_without_calling_aws(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    limiters = RateLimiters({"eks": BucketSpec(rate_per_s=0.01, burst=1)}, clock=clock)
    provider = make_provider(limiters=limiters, retry=RetryPolicy(limiter_max_wait_s=0.5))
    await provider.describe()
    # Cache past its stale limit; the bucket holds well under one token.
    clock.advance(STALE_INTERVALS * DESCRIBE_CACHE_TTL_S)
    with pytest.raises(Throttled) as caught:
        await provider.describe()
    assert caught.value.code == "ClientRateLimited" and caught.value.retryable
    assert len(fault_proxy.requests("DescribeNodegroup")) == 1
    clock.advance(100)
    assert (await provider.describe()).desired == 2


async def test_a_refresh_the_bucket_refuses_answers_from_a_young_cache(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    limiters = RateLimiters({"eks": BucketSpec(rate_per_s=0.001, burst=1)}, clock=clock)
    provider = make_provider(limiters=limiters, retry=RetryPolicy(limiter_max_wait_s=0.1))
    first = await provider.describe()
    clock.advance(DESCRIBE_CACHE_TTL_S)  # expired, and the bucket is empty
    assert await provider.describe() == first
    clock.advance((STALE_INTERVALS - 1) * DESCRIBE_CACHE_TTL_S - 1)
    assert await provider.describe() == first
    assert len(fault_proxy.requests("DescribeNodegroup")) == 1


def sharing_one_bucket(
    fault_proxy: FaultProxy,
    ref: EksNodeGroupRef,
    clock: FakeClock,
    *,
    rate_per_s: float,
    placements: int,
) -> list[EksNodeGroupProvider]:
    """``placements`` providers of one node group built on one AWS context (one EKS bucket)."""
    context = AwsProviderContext(
        limiters=RateLimiters({"eks": BucketSpec(rate_per_s=rate_per_s, burst=5)}, clock=clock),
        endpoint_url=fault_proxy.url,
        clock=clock,
        clients=AwsClients(),
    )
    placement = {"provider": {"type": "EKSNodeGroup", "eksNodeGroup": _ng(ref)}}
    return [build_eks_provider(placement, context) for _ in range(placements)]


async def test_placements_sharing_a_bucket_describe_at_their_fair_share(
    fault_proxy: FaultProxy, eks_nodegroup: EksNodeGroupRef, clock: FakeClock
) -> None:
    rate_per_s, placements = 1.0, 100
    providers = sharing_one_bucket(
        fault_proxy, eks_nodegroup, clock, rate_per_s=rate_per_s, placements=placements
    )
    interval_s = placements / (rate_per_s * DESCRIBE_BUDGET_SHARE)
    assert providers[0].steady_interval_s() == interval_s
    period_s, minutes = 10, 10
    for _ in range(minutes * 60 // period_s):
        await providers[0].describe()
        clock.advance(period_s)
    assert len(fault_proxy.requests("DescribeNodegroup")) == minutes * 60 // interval_s
    del providers[1:]
    assert providers[0].steady_interval_s() == DESCRIBE_CACHE_TTL_S


async def test_settling_placements_describe_at_their_share_of_the_bucket(
    fault_proxy: FaultProxy, eks_nodegroup: EksNodeGroupRef, clock: FakeClock
) -> None:
    rate_per_s, placements, scaled = 1.0, 100, 8
    providers = sharing_one_bucket(
        fault_proxy, eks_nodegroup, clock, rate_per_s=rate_per_s, placements=placements
    )
    for index, provider in enumerate(providers[:scaled]):
        await provider.scale(desired=3 + index, token=f"scale-{index}")
        clock.advance(5)  # the bucket refills between the scale calls
    settling = providers[0]
    interval_s = scaled / (rate_per_s * SETTLING_BUDGET_SHARE)
    assert SETTLING_CACHE_TTL_S < settling.settling_interval_s() == interval_s
    assert interval_s < settling.steady_interval_s()
    before = len(fault_proxy.requests("DescribeNodegroup"))
    period_s, window_s = 10, 240  # inside the settle window of every scale-up above
    for _ in range(window_s // period_s):
        await settling.describe()
        clock.advance(period_s)
    described = len(fault_proxy.requests("DescribeNodegroup")) - before
    assert described == -(-window_s // (period_s * -(-interval_s // period_s)))


async def test_missing_nodegroup_is_not_found_and_not_retried(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, eks_nodegroup: EksNodeGroupRef
) -> None:
    ghost = EksNodeGroupRef(region=REGION, cluster=eks_nodegroup.cluster, nodegroup="ghost")
    with pytest.raises(NotFound) as caught:
        await make_provider(ref=ghost).describe()
    assert caught.value.code == "ResourceNotFoundException"
    assert len(fault_proxy.requests("DescribeNodegroup")) == 1


async def test_read_timeout_becomes_provider_unavailable(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(Fault(kind="latency", operation="DescribeNodegroup", times=99, delay_s=0.6))
    provider = make_provider(read_timeout_s=0.2, retry=RetryPolicy(attempts=2))
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.describe()
    assert caught.value.code == "ReadTimeoutError"


async def test_missing_credentials_are_permission_denied(
    make_provider: ProviderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(PermissionDenied) as caught:
        await make_provider().describe()
    assert caught.value.code == "NoCredentials"


async def test_ice_health_issue_is_insufficient_capacity(
    make_provider: ProviderFactory, eks_nodegroup: EksNodeGroupRef
) -> None:
    moto_state.set_nodegroup_ice(**_ng(eks_nodegroup))
    state = await make_provider().describe()
    assert state.insufficient_capacity
    [issue] = state.health_issues
    assert issue.code == "AsgInstanceLaunchFailures"
    observation = state.to_observation(placement="aws-a", at=1.0)
    assert observation.error is ProviderErrorKind.INSUFFICIENT_CAPACITY
    assert "InsufficientInstanceCapacity" in observation.message


async def test_other_health_issue_is_not_insufficient_capacity(
    make_provider: ProviderFactory, eks_nodegroup: EksNodeGroupRef
) -> None:
    moto_state.set_nodegroup_health(
        **_ng(eks_nodegroup),
        issues=[{"code": "Ec2SecurityGroupNotFound", "message": "sg-1 is gone"}],
    )
    state = await make_provider().describe()
    assert [issue.code for issue in state.health_issues] == ["Ec2SecurityGroupNotFound"]
    assert not state.insufficient_capacity
    assert state.to_observation(placement="aws-a", at=1.0).error is None


async def test_failed_scaling_activity_after_scale_up_is_insufficient_capacity(
    make_provider: ProviderFactory,
    eks_nodegroup: EksNodeGroupRef,
    clock: FakeClock,
    fault_proxy: FaultProxy,
) -> None:
    [group] = moto_state.nodegroup_asg_names(**_ng(eks_nodegroup))
    before = datetime.fromtimestamp(clock.now - 3600, tz=UTC)
    moto_state.add_scaling_activity(region=REGION, group=group, start_time=before)
    provider = make_provider()
    assert not (await provider.describe()).insufficient_capacity  # old failure: ignored
    await provider.scale(desired=6, token="t-ice")
    clock.advance(SETTLING_CACHE_TTL_S)
    moto_state.add_scaling_activity(
        region=REGION, group=group, start_time=datetime.fromtimestamp(clock.now, tz=UTC)
    )
    state = await provider.describe()
    assert state.insufficient_capacity
    assert [i.code for i in state.health_issues] == ["InsufficientInstanceCapacity"]
    assert state.health_issues[0].resource_ids == (group,)
    assert fault_proxy.requests("DescribeScalingActivities")


async def test_steady_state_costs_two_describes_per_minute(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    provider = make_provider()
    period_s = 10
    for _ in range(60 // period_s):
        await provider.describe()
        clock.advance(period_s)
    assert len(fault_proxy.requests("DescribeNodegroup")) == 60 // DESCRIBE_CACHE_TTL_S
    assert fault_proxy.requests("DescribeScalingActivities") == []
    assert fault_proxy.requests("UpdateNodegroupConfig") == []


def test_placement_without_nodegroup_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="nodegroup"):
        EksNodeGroupRef.from_placement(
            {"name": "aws-a", "provider": {"eksNodeGroup": {"region": REGION, "cluster": "c"}}}
        )
    expected = EksNodeGroupRef(region=REGION, cluster="c", nodegroup="n")
    api_shape = {"region": REGION, "cluster": "c", "nodegroup": "n"}
    eks_shape = {"region": REGION, "clusterName": "c", "nodegroupName": "n"}
    for member in (api_shape, eks_shape):
        placement = {"name": "aws-a", "provider": {"type": "EKSNodeGroup", "eksNodeGroup": member}}
        assert EksNodeGroupRef.from_placement(placement) == expected


async def test_concurrent_update_is_update_in_progress_for_a_later_reconcile(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(
        Fault(
            kind="server_error",
            operation="UpdateNodegroupConfig",
            status=409,
            code="ResourceInUseException",
            times=99,
        )
    )
    provider = make_provider()
    with pytest.raises(UpdateInProgress) as caught:
        await provider.scale(desired=5, token="t-busy")
    assert caught.value.retryable and caught.value.code == "ResourceInUseException"
    [refused] = fault_proxy.requests("UpdateNodegroupConfig")  # not retried in place
    assert refused.json()["clientRequestToken"] == "t-busy"
    assert (await provider.describe()).desired == 2  # nothing changed, nothing cached as done


async def test_a_failing_settling_detail_does_not_fail_describe(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, clock: FakeClock
) -> None:
    provider = make_provider()
    await provider.scale(desired=4, token="t-detail")
    fault_proxy.add(Fault(kind="throttle", operation="DescribeScalingActivities", times=99))
    clock.advance(SETTLING_CACHE_TTL_S)
    state = await provider.describe()
    assert state.desired == 4
    assert len(fault_proxy.requests("DescribeScalingActivities")) == RETRY_ATTEMPTS
