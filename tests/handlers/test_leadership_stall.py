"""The leader keeps its Lease through an event-loop stall shorter than the renew deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from kubernetes_asyncio import client as k8s

from crossfade.handlers.leadership import (
    LEASE_DURATION_S,
    RENEW_DEADLINE_S,
    LeaseElector,
    LeaseRef,
)
from crossfade.testing.controlplane import TestCluster

# CPU-bound pool work holding the loop while a renew is in flight (seen: ~60 pools starting
# at once on 2 cores). Longer than the old 7 s deadline, well inside kube's 10 s default.
STALL_S = 8.5


class StallingElector(LeaseElector):
    """Blocks the event loop once, inside the first renew, as CPU-bound work would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renewals = 0
        self.second_renewal = asyncio.Event()

    async def try_acquire_or_renew(self) -> bool:
        self.renewals += 1
        if self.renewals == 2:  # 1 is the acquisition, 2 the first renew of keep()
            time.sleep(STALL_S)  # noqa: ASYNC251 (the stall under test)
        held = await super().try_acquire_or_renew()
        if self.renewals == 3:
            self.second_renewal.set()
        return held


async def test_leader_keeps_the_lease_through_a_stall_shorter_than_the_renew_deadline(
    management_cluster: TestCluster, namespace: str
) -> None:
    assert STALL_S < RENEW_DEADLINE_S < LEASE_DURATION_S
    api = await management_cluster.async_api_client()
    ref = LeaseRef(namespace=namespace, name=f"leader-{uuid.uuid4().hex[:6]}", identity="a")
    elector = StallingElector(api_client=api, ref=ref)
    lost = asyncio.Event()
    try:
        assert await elector.acquire()
        keeper = asyncio.create_task(elector.keep(on_lost=lost.set))
        stopped = asyncio.create_task(lost.wait())
        renewed = asyncio.create_task(elector.second_renewal.wait())
        await asyncio.wait({stopped, renewed}, return_when=asyncio.FIRST_COMPLETED)
        assert not lost.is_set()
        assert elector.is_leader
        lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(ref.name, namespace)
        assert lease.spec.holder_identity == "a"
        assert lease.spec.lease_duration_seconds == LEASE_DURATION_S
        for task in (keeper, stopped, renewed):
            task.cancel()
        await asyncio.gather(keeper, stopped, renewed, return_exceptions=True)
    finally:
        await api.close()
