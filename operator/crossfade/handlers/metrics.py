"""Prometheus metrics of the operator: health, weights, failovers, latencies, API calls.

Every metric lives in one ``OperatorMetrics`` object with its own registry, so tests and
several operators in one process never collide. Label sets are bounded by the pools and
placements that exist; ``forget_pool`` drops a deleted pool's series (bounded memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

HEALTH_VALUES = {"Healthy": 1.0, "Unhealthy": 0.0, "Unknown": -1.0}
DETECTION_TO_SHIFT_BUCKETS_S = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)
RECONCILE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class OperatorMetrics:
    """All metrics the operator exports on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.placement_health = Gauge(
            "crossfade_placement_health",
            "Placement health after hysteresis: 1 healthy, 0 unhealthy, -1 unknown",
            ["namespace", "pool", "placement"],
            registry=r,
        )
        self.placement_weight = Gauge(
            "crossfade_placement_weight",
            "Traffic weight of a placement (0..100) as last written or read",
            ["namespace", "pool", "placement"],
            registry=r,
        )
        self.placement_desired_nodes = Gauge(
            "crossfade_placement_desired_nodes",
            "Desired node count of a placement as the cloud reports it",
            ["namespace", "pool", "placement"],
            registry=r,
        )
        self.failovers = Counter(
            "crossfade_failovers",
            "Traffic transitions started, by reason",
            ["namespace", "pool", "reason"],
            registry=r,
        )
        self.detection_to_shift = Histogram(
            "crossfade_detection_to_shift_seconds",
            "Seconds from the first failed probe of a placement to the first weight write away",
            ["namespace", "pool"],
            buckets=DETECTION_TO_SHIFT_BUCKETS_S,
            registry=r,
        )
        self.provider_calls = Counter(
            "crossfade_provider_calls",
            "Cloud provider API calls made by the operator",
            ["placement", "operation", "outcome"],
            registry=r,
        )
        self.provider_throttles = Counter(
            "crossfade_provider_throttles",
            "Cloud provider API calls refused for their rate",
            ["placement", "operation"],
            registry=r,
        )
        # Not labelled by pool: a histogram child is 12 series and ~3 KiB of the operator's
        # memory, 12 000 series at 1000 pools. The slowest pools are found through their
        # status and `crossfade_reconcile_errors_total`.
        self.reconcile_duration = Histogram(
            "crossfade_reconcile_duration_seconds",
            "Wall time of one observe-decide-act pass, over all pools",
            buckets=RECONCILE_BUCKETS_S,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "crossfade_reconcile_errors",
            "Passes that ended in an unexpected error",
            ["namespace", "pool"],
            registry=r,
        )
        self.status_writes = Counter(
            "crossfade_status_writes",
            "Status patches written (none at steady state)",
            ["namespace", "pool"],
            registry=r,
        )
        self.fail_static = Gauge(
            "crossfade_fail_static",
            "1 while the pool holds traffic still because every placement failed",
            ["namespace", "pool"],
            registry=r,
        )
        self.leader = Gauge(
            "crossfade_leader", "1 while this replica holds the leader lease", registry=r
        )

    def render(self) -> bytes:
        """Return the text exposition format."""
        return generate_latest(self.registry)

    # The executor's hooks (handlers.executor.ExecutorMetrics) ----------------------------
    def provider_call(self, *, placement: str, operation: str, error: str | None) -> None:
        self.provider_calls.labels(placement, operation, error or "ok").inc()
        if error == "Throttled":
            self.provider_throttles.labels(placement, operation).inc()

    def weights_applied(self, *, weights: Mapping[str, int]) -> None:
        return None  # per-pool weights are set by observe_pool, which knows the pool

    # Per pool -------------------------------------------------------------------------
    def observe_pool(
        self,
        *,
        namespace: str,
        pool: str,
        health: Mapping[str, str],
        weights: Mapping[str, int] | None,
        desired: Mapping[str, int | None],
        fail_static: bool,
    ) -> None:
        """Set the pool's gauges from one pass."""
        for placement, value in health.items():
            self.placement_health.labels(namespace, pool, placement).set(
                HEALTH_VALUES.get(value, -1.0)
            )
        for placement, weight in (weights or {}).items():
            self.placement_weight.labels(namespace, pool, placement).set(weight)
        for placement, nodes in desired.items():
            if nodes is not None:
                self.placement_desired_nodes.labels(namespace, pool, placement).set(nodes)
        self.fail_static.labels(namespace, pool).set(1.0 if fail_static else 0.0)

    def forget_pool(self, *, namespace: str, pool: str, placements: Iterable[str]) -> None:
        """Remove a deleted pool's labelled series."""
        for placement in placements:
            for gauge in (
                self.placement_health,
                self.placement_weight,
                self.placement_desired_nodes,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, pool, placement)
        for metric in (
            self.fail_static,
            self.reconcile_errors,
            self.status_writes,
            self.detection_to_shift,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, pool)
