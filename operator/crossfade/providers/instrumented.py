"""One wrapper that adds Prometheus metrics and structured logs to any CapacityProvider.

Providers stay free of instrumentation (Karpenter's metrics decorator is the model): the
operator wraps each provider once, ``InstrumentedProvider(inner, ...)``, and every call is
counted, timed and logged with its outcome, its error kind and whether it was throttled.
``ProviderMetrics.aws_call_observer`` also counts the AWS API attempts under one provider
call (retries included), by API, operation and outcome code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from crossfade.providers.base import CapacityProvider, NodeGroupState, ScaleResult
from crossfade.providers.errors import ProviderError, Throttled

log = logging.getLogger(__name__)

CALL_DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OUTCOME_OK = "ok"

T = TypeVar("T")


class ProviderMetrics:
    """Prometheus series of provider calls; one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "crossfade_provider_method_calls",
            "CapacityProvider calls (describe, scale) by outcome: ok or the error kind",
            ["provider_type", "placement", "method", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "crossfade_provider_method_errors",
            "CapacityProvider calls that failed, by error kind and vendor code",
            ["provider_type", "placement", "method", "kind", "code"],
            registry=r,
        )
        self.throttles = Counter(
            "crossfade_provider_method_throttles",
            "CapacityProvider calls refused for their rate (by the cloud or the local bucket)",
            ["provider_type", "placement", "method"],
            registry=r,
        )
        self.duration = Histogram(
            "crossfade_provider_method_duration_seconds",
            "Wall time of CapacityProvider calls, retries included",
            ["provider_type", "method"],
            buckets=CALL_DURATION_BUCKETS_S,
            registry=r,
        )
        self.api_calls = Counter(
            "crossfade_cloud_api_calls",
            "Cloud API attempts (each retry counts), by API, operation and outcome code",
            ["api", "operation", "outcome"],
            registry=r,
        )

    def aws_call_observer(self, api: str, operation: str, outcome: str) -> None:
        """Count one cloud API attempt (fits ``providers.aws_api.CallObserver``)."""
        self.api_calls.labels(api, operation, outcome).inc()


class InstrumentedProvider:
    """A ``CapacityProvider`` that measures and logs another one, changing nothing else."""

    def __init__(
        self,
        inner: CapacityProvider,
        *,
        provider_type: str,
        placement: str,
        metrics: ProviderMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.provider_type = provider_type
        self.placement = placement
        self._metrics = metrics
        self._clock = clock

    @property
    def name(self) -> str:
        return self.inner.name

    async def describe(self) -> NodeGroupState:
        return await self._measure("describe", self.inner.describe(), desired=None)

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        return await self._measure(
            "scale", self.inner.scale(desired=desired, token=token), desired=desired
        )

    async def _measure(self, method: str, call: Awaitable[T], *, desired: int | None) -> T:
        m = self._metrics
        labels = (self.provider_type, self.placement, method)
        started = self._clock()
        fields: dict[str, object] = {
            "provider": self.name,
            "provider_type": self.provider_type,
            "placement": self.placement,
            "method": method,
        }
        if desired is not None:
            fields["desired"] = desired
        try:
            result = await call
        except ProviderError as error:
            elapsed_s = self._clock() - started
            m.duration.labels(self.provider_type, method).observe(elapsed_s)
            m.calls.labels(*labels, error.kind.value).inc()
            m.errors.labels(*labels, error.kind.value, error.code or "none").inc()
            if isinstance(error, Throttled):
                m.throttles.labels(*labels).inc()
            log.warning(
                "provider call failed",
                extra=fields
                | {
                    "error_kind": error.kind.value,
                    "error_code": error.code,
                    "retryable": error.retryable,
                    "duration_ms": round(elapsed_s * 1000, 1),
                    "error": error.message,
                },
            )
            raise
        elapsed_s = self._clock() - started
        m.duration.labels(self.provider_type, method).observe(elapsed_s)
        m.calls.labels(*labels, OUTCOME_OK).inc()
        log.debug("provider call", extra=fields | {"duration_ms": round(elapsed_s * 1000, 1)})
        return result
