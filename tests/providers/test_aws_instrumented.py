"""The metrics + logs wrapper around a real EKS provider talking to moto."""

from __future__ import annotations

import logging

import pytest

from crossfade.providers.aws_api import RETRY_ATTEMPTS, EksApi
from crossfade.providers.aws_eks import EksNodeGroupProvider
from crossfade.providers.base import CapacityProvider
from crossfade.providers.errors import ProviderUnavailable, Throttled
from crossfade.providers.instrumented import InstrumentedProvider, ProviderMetrics
from crossfade.providers.ratelimit import RateLimiters
from crossfade.testing.aws_faults import Fault, FaultProxy
from tests.providers.conftest import ProviderFactory


def sample(metrics: ProviderMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_calls_errors_and_throttles_are_counted_and_logged(
    make_provider: ProviderFactory, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = ProviderMetrics()
    provider = InstrumentedProvider(
        make_provider(), provider_type="EKSNodeGroup", placement="aws-a", metrics=metrics
    )
    assert isinstance(provider, CapacityProvider)
    await provider.describe()
    fault_proxy.add(Fault(kind="throttle", operation="UpdateNodegroupConfig", times=99))
    with caplog.at_level(logging.WARNING), pytest.raises(Throttled):
        await provider.scale(desired=3, token="t-throttled")
    base = {"provider_type": "EKSNodeGroup", "placement": "aws-a"}
    assert (
        sample(
            metrics,
            "crossfade_provider_method_calls_total",
            **base,
            method="describe",
            outcome="ok",
        )
        == 1
    )
    assert (
        sample(
            metrics,
            "crossfade_provider_method_calls_total",
            **base,
            method="scale",
            outcome="Throttled",
        )
        == 1
    )
    assert sample(metrics, "crossfade_provider_method_throttles_total", **base, method="scale") == 1
    assert (
        sample(
            metrics,
            "crossfade_provider_method_errors_total",
            **base,
            method="scale",
            kind="Throttled",
            code="ThrottlingException",
        )
        == 1
    )
    failed = [r for r in caplog.records if r.getMessage() == "provider call failed"]
    assert failed and failed[0].error_code == "ThrottlingException"  # type: ignore[attr-defined]


async def test_api_attempts_are_counted_per_operation(
    make_provider: ProviderFactory, fault_proxy: FaultProxy
) -> None:
    metrics = ProviderMetrics()
    base = make_provider()
    eks = EksApi.create(
        region=base.ref.region,
        limiters=RateLimiters(),
        endpoint_url=fault_proxy.url,
        observer=metrics.aws_call_observer,
        sleep=_no_sleep,
    )
    provider = EksNodeGroupProvider(ref=base.ref, eks=eks, autoscaling=None)
    fault_proxy.add(Fault(kind="server_error", operation="DescribeNodegroup", times=99))
    with pytest.raises(ProviderUnavailable, match="DescribeNodegroup"):
        await provider.describe()
    assert (
        sample(
            metrics,
            "crossfade_cloud_api_calls_total",
            api="eks",
            operation="DescribeNodegroup",
            outcome="InternalFailure",
        )
        == RETRY_ATTEMPTS
    )


async def _no_sleep(seconds: float) -> None:
    return None
