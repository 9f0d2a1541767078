"""Fixtures of the provider tests: moto server, fault proxy, EKS node groups, fake clocks."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import boto3
import pytest

from crossfade.providers.aws_api import (
    RETRY_ATTEMPTS,
    AutoScalingApi,
    AwsClients,
    EksApi,
    RetryPolicy,
)
from crossfade.providers.aws_eks import (
    DESCRIBE_CACHE_TTL_S,
    EksNodeGroupProvider,
    EksNodeGroupRef,
)
from crossfade.providers.ratelimit import RateLimiters
from crossfade.testing import moto_state
from crossfade.testing.aws_faults import Fault, FaultProxy
from tests.providers.conformance import ProviderCase
from tests.support.moto_server import aws_env, fault_proxy, moto_server

__all__ = ["aws_env", "fault_proxy", "moto_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """An asyncio.sleep stand-in that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorded_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def eks_nodegroup(moto_server: str, aws_env: None) -> EksNodeGroupRef:
    """Create an EKS cluster and a node group (min 0, max 10, desired 2) in moto."""
    suffix = uuid.uuid4().hex[:8]
    ref = EksNodeGroupRef(region=REGION, cluster=f"prod-{suffix}", nodegroup=f"gpu-{suffix}")
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
    eks.create_cluster(
        name=ref.cluster,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a", "subnet-b"]},
    )
    eks.create_nodegroup(
        clusterName=ref.cluster,
        nodegroupName=ref.nodegroup,
        subnets=["subnet-a", "subnet-b"],
        nodeRole=f"arn:aws:iam::{ACCOUNT}:role/node",
        instanceTypes=["p5.48xlarge"],
        scalingConfig={"minSize": 0, "maxSize": 10, "desiredSize": 2},
    )
    return ref


ProviderFactory = Callable[..., EksNodeGroupProvider]


@pytest.fixture
def make_provider(
    fault_proxy: FaultProxy,
    eks_nodegroup: EksNodeGroupRef,
    clock: FakeClock,
    recorded_sleep: RecordingSleep,
) -> ProviderFactory:
    """Build an EKS provider that talks to moto through the fault proxy."""

    def make(
        *,
        limiters: RateLimiters | None = None,
        retry: RetryPolicy | None = None,
        read_timeout_s: float = 5.0,
        ref: EksNodeGroupRef | None = None,
    ) -> EksNodeGroupProvider:
        shared = limiters or RateLimiters()
        options = {
            "region": REGION,
            "limiters": shared,
            "endpoint_url": fault_proxy.url,
            "retry": retry,
            "sleep": recorded_sleep,
            "read_timeout_s": read_timeout_s,
            # Clients of their own, so a test that changes the credentials gets a new chain.
            "clients": AwsClients(),
        }
        return EksNodeGroupProvider(
            ref=ref or eks_nodegroup,
            eks=EksApi.create(**options),
            autoscaling=AutoScalingApi.create(**options),
            clock=clock,
        )

    return make


@pytest.fixture
def eks_provider_case(
    make_provider: ProviderFactory,
    eks_nodegroup: EksNodeGroupRef,
    fault_proxy: FaultProxy,
    clock: FakeClock,
) -> ProviderCase:
    """EKS joins the shared conformance suite: moto over HTTP behind the fault proxy."""

    async def settle() -> None:
        clock.advance(DESCRIBE_CACHE_TTL_S)

    async def ice() -> None:
        moto_state.set_nodegroup_ice(
            region=eks_nodegroup.region,
            cluster=eks_nodegroup.cluster,
            nodegroup=eks_nodegroup.nodegroup,
        )

    async def throttle() -> None:
        fault_proxy.add(Fault(kind="throttle", operation="DescribeNodegroup", times=RETRY_ATTEMPTS))

    missing = EksNodeGroupRef(
        region=eks_nodegroup.region, cluster=eks_nodegroup.cluster, nodegroup="absent"
    )
    return ProviderCase(
        provider=make_provider(),
        missing=make_provider(ref=missing),
        initial=2,
        settle=settle,
        inject_insufficient_capacity=ice,
        inject_throttling=throttle,
    )
