"""The orphan reaper loop: every few minutes, one sweep per cloud cluster, findings as Events.

Runs only in the leader (it is started with kopf, which runs only while the Lease is held).
Each sweep lists the live InferencePools from the apiserver, learns from their templated
placements which clusters crossfade may have created node groups in (one ``OrphanReaper``
per cluster, keyed like the circuit breakers: provider type / region / cluster), and sweeps
each cluster once, however many pools use it. A cluster stays known for the life of the
process after its last pool is gone, so the orphans that pool left are still found.

Each finding becomes a Warning Event (reason = the finding's action, e.g. ``OrphanRetained``)
in the orphan's pool namespace, naming the pool (which is usually gone) as involvedObject, so
``kubectl get events -n <namespace> --field-selector involvedObject.name=<pool>`` finds it;
when that namespace is gone too, on the operator's leader Lease instead. Metrics:
``crossfade_orphan_node_groups{target,action}`` (gauge per sweep) and
``crossfade_orphan_node_groups_deleted`` (providers/reaper.py), and
``crossfade_orphan_reaper_sweeps{target,outcome}`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter

from crossfade.handlers.object_events import ObjectRef, post_event
from crossfade.handlers.wiring import breaker_key
from crossfade.providers.errors import ProviderError
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import Provisioner
from crossfade.providers.reaper import (
    DEFAULT_GRACE_PERIOD_S,
    OrphanReaper,
    ReapAction,
    ReaperMetrics,
    ReapFinding,
)

log = logging.getLogger(__name__)

GROUP = "crossfade.dev"
VERSION = "v1alpha1"
PLURAL = "inferencepools"
DEFAULT_INTERVAL_S = 600.0
LEASE_API_VERSION = "coordination.k8s.io/v1"
LEASE_KIND = "Lease"

BuildProvisioner = Callable[[Mapping[str, Any], Any], Provisioner]  # (placement, context)


@dataclass(frozen=True, slots=True)
class ReaperSettings:
    """How often to sweep and how long a Delete-policy orphan waits before it is deleted."""

    interval_s: float = DEFAULT_INTERVAL_S
    grace_period_s: float = DEFAULT_GRACE_PERIOD_S

    @property
    def enabled(self) -> bool:
        """An interval of 0 turns the loop off."""
        return self.interval_s > 0


class ReaperLoopMetrics:
    """Sweep outcomes per cluster (the orphan gauges are ``providers.reaper.ReaperMetrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reaper = ReaperMetrics(self.registry)
        self.sweeps = Counter(
            "crossfade_orphan_reaper_sweeps",
            "Orphan reaper sweeps per cloud cluster, by outcome: ok or the error kind",
            ["target", "outcome"],
            registry=self.registry,
        )


def live_pools(pools: Sequence[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    """Return ``{pool uid: placement names}`` of the listed pools (the reaper's ``live``)."""
    live: dict[str, frozenset[str]] = {}
    for pool in pools:
        uid = str((pool.get("metadata") or {}).get("uid") or "")
        if uid:
            placements = (pool.get("spec") or {}).get("placements") or ()
            live[uid] = frozenset(str(p.get("name")) for p in placements)
    return live


def templated_placements(
    pools: Sequence[Mapping[str, Any]],
) -> list[tuple[str, Mapping[str, Any]]]:
    """Return ``(namespace, placement)`` of every placement with a template."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for pool in pools:
        namespace = str((pool.get("metadata") or {}).get("namespace") or "")
        for placement in (pool.get("spec") or {}).get("placements") or ():
            if placement.get("template") and placement.get("provider"):
                found.append((namespace, placement))
    return found


class ReaperLoop:
    """Owns one ``OrphanReaper`` per cloud cluster; ``sweep_once`` is one round over all."""

    def __init__(
        self,
        *,
        api_client: Any,
        provider_context: Any,
        settings: ReaperSettings,
        metrics: ReaperLoopMetrics,
        lease: ObjectRef,
        namespaces: tuple[str, ...] = (),
        build_provisioner: BuildProvisioner = provisioner_for,
    ) -> None:
        self._api_client = api_client
        self._context = provider_context
        self._settings = settings
        self._metrics = metrics
        self._lease = lease
        self._namespaces = namespaces
        self._build = build_provisioner
        self.reapers: dict[str, OrphanReaper] = {}
        self._provisioners: list[Provisioner] = []

    async def list_pools(self) -> list[dict[str, Any]]:
        """Return the InferencePools this operator watches (all, or its namespaces)."""
        api: Any = k8s.CustomObjectsApi(self._api_client)
        if not self._namespaces:
            answer = await api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            return list(answer.get("items") or [])
        items: list[dict[str, Any]] = []
        for namespace in self._namespaces:
            answer = await api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            items.extend(answer.get("items") or [])
        return items

    def _learn_clusters(self, pools: Sequence[Mapping[str, Any]]) -> None:
        for namespace, placement in templated_placements(pools):
            key = breaker_key(placement)
            if key in self.reapers:
                continue
            try:
                provisioner = self._build(placement, self._context.for_namespace(namespace))
            except (ProviderError, ValueError) as exc:
                log.warning("reaper cannot reach a cluster", extra={"target": key, "error": exc})
                continue
            self._provisioners.append(provisioner)
            self.reapers[key] = OrphanReaper(
                provisioner=provisioner,
                target=key,
                grace_period_s=self._settings.grace_period_s,
                metrics=self._metrics.reaper,
            )

    async def sweep_once(self) -> list[ReapFinding]:
        """List pools, sweep every known cluster once, post an Event per finding."""
        pools = await self.list_pools()
        self._learn_clusters(pools)
        live = live_pools(pools)
        findings: list[ReapFinding] = []
        for key, reaper in self.reapers.items():
            try:
                found = await reaper.sweep(live)
            except ProviderError as exc:
                self._metrics.sweeps.labels(key, exc.kind.value).inc()
                log.warning(
                    "orphan sweep failed",
                    extra={"target": key, "error_kind": exc.kind.value, "error_code": exc.code},
                )
                continue
            self._metrics.sweeps.labels(key, "ok").inc()
            for finding in found:
                await self.report(finding)
            findings.extend(found)
        return findings

    async def report(self, finding: ReapFinding) -> None:
        """Post the finding on its (usually deleted) pool, or on the Lease if that fails."""
        owner = finding.group.owner
        event_type = "Normal" if finding.action is ReapAction.DELETED else "Warning"
        on_pool = ObjectRef.pool(namespace=owner.namespace, name=owner.pool, uid=owner.pool_uid)
        for involved in (on_pool, self._lease):
            posted = await post_event(
                self._api_client,
                involved=involved,
                event_type=event_type,
                reason=finding.action.value,
                message=finding.message,
            )
            if posted:
                return

    async def run(self, *, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop``; a failed round is logged, never fatal."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except (ApiException, OSError, TimeoutError) as exc:
                log.warning("orphan reaper round failed", extra={"error": str(exc)})
            except Exception:  # a background loop must outlive any one bad round; log it all
                log.exception("orphan reaper round failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.interval_s)

    async def aclose(self) -> None:
        """Close the provisioners' clients (Cluster API kubeconfig clients)."""
        for provisioner in self._provisioners:
            closer = getattr(provisioner, "aclose", None)
            if callable(closer):
                await closer()


def lease_ref(*, namespace: str, name: str) -> ObjectRef:
    """Return the operator's leader Lease as an Event target."""
    return ObjectRef(LEASE_API_VERSION, LEASE_KIND, namespace, name)
