"""Leader election on a coordination.k8s.io Lease: one active replica, the others wait.

The active replica renews the Lease every RENEW_INTERVAL_S. A standby takes it over once
``renewTime + leaseDurationSeconds`` has passed. The active replica stops acting as soon
as it fails to renew for longer than RENEW_DEADLINE_S (shorter than the lease duration),
so two replicas never act at the same time, provided their clocks roughly agree.

The timings are Kubernetes' own leader-election defaults (leaseDuration 15 s,
renewDeadline 10 s, retryPeriod 2 s). One renew attempt may take the whole renew deadline:
on a busy event loop (many pools starting at once) the answer to a renew that the apiserver
accepted in time can be read late, and that must not make the leader step down. A late
success is still a proof: the replace carries the Lease's resourceVersion, so it fails with
409 if a standby took over meanwhile. The elector uses its own ApiClient (process.py), so
its requests never queue behind the pools' requests in a shared connection pool.
See docs/operations.md, "Leader election timing".
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_DURATION_S = 15
RENEW_INTERVAL_S = 2.0
RENEW_DEADLINE_S = 10.0
RETRY_INTERVAL_S = 2.0
HTTP_CONFLICT = 409
HTTP_NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """Where the Lease lives and who we are."""

    namespace: str
    name: str
    identity: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def lease_expired(lease: Any, *, now: datetime.datetime) -> bool:
    """True when the Lease's holder has not renewed within its lease duration."""
    spec = lease.spec
    if spec is None or not spec.holder_identity:
        return True
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None:
        return True
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=datetime.UTC)
    duration = spec.lease_duration_seconds or LEASE_DURATION_S
    return bool(now > renewed + datetime.timedelta(seconds=duration))


class LeaseElector:
    """Acquire and keep one Lease; call ``on_lost`` when leadership can no longer be proven."""

    def __init__(
        self,
        *,
        api_client: Any,
        ref: LeaseRef,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._api = k8s.CoordinationV1Api(api_client)
        self._ref = ref
        self._clock = clock
        self.is_leader = False
        self.transitions = 0

    def _spec(self, *, acquire: bool, previous: Any = None) -> Any:
        now = self._clock()
        transitions = (previous.spec.lease_transitions or 0) if previous is not None else 0
        return k8s.V1LeaseSpec(
            holder_identity=self._ref.identity,
            lease_duration_seconds=LEASE_DURATION_S,
            acquire_time=now if acquire else previous.spec.acquire_time,
            renew_time=now,
            lease_transitions=transitions + (1 if acquire and previous is not None else 0),
        )

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; return True when we hold the Lease afterwards."""
        ns, name = self._ref.namespace, self._ref.name
        try:
            lease = await self._api.read_namespaced_lease(name, ns)
        except ApiException as exc:
            if exc.status != HTTP_NOT_FOUND:
                raise
            body = k8s.V1Lease(
                metadata=k8s.V1ObjectMeta(name=name, namespace=ns),
                spec=self._spec(acquire=True),
            )
            try:
                await self._api.create_namespaced_lease(ns, body)
            except ApiException as create_exc:
                if create_exc.status == HTTP_CONFLICT:
                    return False
                raise
            return True
        holder = lease.spec.holder_identity if lease.spec is not None else None
        ours = holder == self._ref.identity
        if not ours and not lease_expired(lease, now=self._clock()):
            return False
        lease.spec = self._spec(acquire=not ours, previous=lease)
        try:
            # replace carries resourceVersion: a concurrent taker makes one of us get 409.
            await self._api.replace_namespaced_lease(name, ns, lease)
        except ApiException as exc:
            if exc.status == HTTP_CONFLICT:
                return False
            raise
        if not ours:
            self.transitions += 1
            log.info("took over lease %s/%s from %s", ns, name, holder or "nobody")
        return True

    async def acquire(self, *, stop: asyncio.Event | None = None) -> bool:
        """Wait until we hold the Lease (True) or ``stop`` is set (False)."""
        while stop is None or not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    return True
            except (ApiException, OSError, TimeoutError) as exc:
                log.warning("lease attempt failed: %s", exc)
            await asyncio.sleep(RETRY_INTERVAL_S)
        return False

    async def keep(self, *, on_lost: Callable[[], None]) -> None:
        """Renew until renewal fails for RENEW_DEADLINE_S or someone else holds the Lease."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(RENEW_INTERVAL_S)
            try:
                renewed = await asyncio.wait_for(
                    self.try_acquire_or_renew(), timeout=RENEW_DEADLINE_S
                )
            except (ApiException, OSError, TimeoutError) as exc:
                log.warning("lease renewal failed: %s", exc)
                renewed = None
            if renewed:
                last_ok = loop.time()
                continue
            if renewed is False or loop.time() - last_ok > RENEW_DEADLINE_S:
                self.is_leader = False
                log.error("lost leadership of lease %s/%s", self._ref.namespace, self._ref.name)
                on_lost()
                return

    async def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.is_leader:
            return
        try:
            lease = await self._api.read_namespaced_lease(self._ref.name, self._ref.namespace)
            spec: Any = lease.spec
            if spec is not None and spec.holder_identity == self._ref.identity:
                spec.holder_identity = None
                spec.renew_time = None
                spec.acquire_time = None
                await self._api.replace_namespaced_lease(self._ref.name, self._ref.namespace, lease)
        except (ApiException, OSError) as exc:
            log.warning("could not release lease: %s", exc)
        self.is_leader = False
