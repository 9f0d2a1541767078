"""Orphan reaper: find our node groups whose pool or placement is gone; report, then delete.

Only node groups carrying all ownership tags are ever considered (``Provisioner.list_owned``),
and ``delete_owned`` re-reads the tags right before deleting. An orphan is deleted only when
the deletion policy recorded on it says Delete and it has stayed an orphan for the grace
period; otherwise it is reported (the caller turns findings into Events and a metric).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from crossfade.providers.errors import ProviderError
from crossfade.providers.provisioning import DeletionPolicyTag, OwnedNodeGroup, Provisioner

log = logging.getLogger(__name__)

DEFAULT_GRACE_PERIOD_S = 3600.0


class ReapAction(enum.StrEnum):
    """What the reaper did (or will do) with one orphan; also the Event reason."""

    RETAINED = "OrphanRetained"  # policy is not Delete: report only, forever
    WAITING = "OrphanGracePeriod"  # policy Delete, grace period not over yet
    DELETED = "OrphanDeleted"
    DELETE_FAILED = "OrphanDeleteFailed"


@dataclass(frozen=True, slots=True)
class ReapFinding:
    """One orphan and what became of it."""

    group: OwnedNodeGroup
    action: ReapAction
    orphaned_since: float
    message: str


def is_orphan(group: OwnedNodeGroup, live: Mapping[str, frozenset[str]]) -> bool:
    """Return True when no live pool (by UID) has the group's placement.

    ``live`` maps each existing pool's UID to its placement names. A pool recreated under
    the same name has a new UID, so its predecessor's node groups are orphans too.
    """
    placements = live.get(group.owner.pool_uid)
    return placements is None or group.owner.placement not in placements


def decide(
    group: OwnedNodeGroup, *, orphaned_since: float, now: float, grace_period_s: float
) -> ReapAction:
    """Return what to do with an orphan (pure)."""
    if group.deletion_policy is not DeletionPolicyTag.DELETE:
        return ReapAction.RETAINED
    if now - orphaned_since < grace_period_s:
        return ReapAction.WAITING
    return ReapAction.DELETED


class ReaperMetrics:
    """Prometheus series of the reaper; one instance per registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.orphans = Gauge(
            "crossfade_orphan_node_groups",
            "Node groups with crossfade ownership tags whose pool or placement is gone, "
            "by what the last sweep did with them",
            ["target", "action"],
            registry=self.registry,
        )
        self.deleted = Counter(
            "crossfade_orphan_node_groups_deleted",
            "Orphan node groups the reaper deleted",
            ["target"],
            registry=self.registry,
        )


class OrphanReaper:
    """Sweeps one provisioner's cluster; remembers when each orphan was first seen.

    First-seen times live in memory: after a restart the grace period starts again, which
    only ever delays a deletion.
    """

    def __init__(
        self,
        *,
        provisioner: Provisioner,
        target: str = "",
        grace_period_s: float = DEFAULT_GRACE_PERIOD_S,
        clock: Callable[[], float] = time.time,
        metrics: ReaperMetrics | None = None,
    ) -> None:
        self._provisioner = provisioner
        self._target = target
        self._metrics = metrics or ReaperMetrics()
        self._grace_period_s = grace_period_s
        self._clock = clock
        self._first_seen: dict[str, float] = {}

    async def sweep(self, live: Mapping[str, frozenset[str]]) -> list[ReapFinding]:
        """List owned node groups, and report or delete the orphans among them."""
        now = self._clock()
        orphans = [g for g in await self._provisioner.list_owned() if is_orphan(g, live)]
        names = {group.name for group in orphans}
        self._first_seen = {n: t for n, t in self._first_seen.items() if n in names}
        findings: list[ReapFinding] = []
        for group in orphans:
            since = self._first_seen.setdefault(group.name, now)
            action = decide(
                group, orphaned_since=since, now=now, grace_period_s=self._grace_period_s
            )
            message = (
                f"node group {group.name} belongs to placement {group.owner.placement!r} of "
                f"pool {group.owner.namespace}/{group.owner.pool} (uid {group.owner.pool_uid}), "
                f"which no longer exists; deletion policy {group.deletion_policy.value}"
            )
            if action is ReapAction.DELETED:
                try:
                    await self._provisioner.delete_owned(name=group.name, owner=group.owner)
                except ProviderError as error:
                    action = ReapAction.DELETE_FAILED
                    message = f"{message}; delete failed: {error.code}"
                else:
                    self._first_seen.pop(group.name, None)
                    self._metrics.deleted.labels(self._target).inc()
            findings.append(
                ReapFinding(group=group, action=action, orphaned_since=since, message=message)
            )
            log.info(
                "orphan node group",
                extra={
                    "node_group": group.name,
                    "action": action.value,
                    "pool_uid": group.owner.pool_uid,
                },
            )
        for action in ReapAction:
            count = sum(finding.action is action for finding in findings)
            self._metrics.orphans.labels(self._target, action.value).set(count)
        return findings
