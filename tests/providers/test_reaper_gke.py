"""Orphan reaper against the GKE test server: delete by policy after grace, never unlabelled."""

from __future__ import annotations

import pytest

from crossfade.providers.provisioning import DeletionPolicyTag, OwnershipConflict, node_group_name
from crossfade.providers.reaper import OrphanReaper, ReapAction
from crossfade.testing.gke_server import GKEServer, GKEState
from tests.providers.conftest import FakeClock
from tests.providers.gke_provisioning_support import (
    TEMPLATE,
    StepClock,
    add_team_pool,
    deletes,
    gke_server,
    gke_state,
    make_provisioner,
    new_owner,
    pool_names,
    step_clock,
)

__all__ = ["gke_server", "gke_state", "step_clock"]

GRACE_S = 600.0


async def test_orphan_with_delete_policy_is_removed_only_after_grace(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock, clock: FakeClock
) -> None:
    provisioner = make_provisioner(gke_server, step_clock)
    kept, orphan = new_owner("gcp-a"), new_owner("gcp-b")
    live_pool = await provisioner.ensure(
        owner=kept, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    orphan_pool = await provisioner.ensure(
        owner=orphan, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    live = {kept.pool_uid: frozenset({"gcp-a"})}  # the orphan's pool was deleted
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=GRACE_S, clock=clock)
    [first] = await reaper.sweep(live)
    assert first.action is ReapAction.WAITING and first.group.name == orphan_pool.name
    assert first.group.owner == orphan
    clock.advance(GRACE_S - 1)
    [waiting] = await reaper.sweep(live)
    assert waiting.action is ReapAction.WAITING
    assert deletes(gke_state) == []

    clock.advance(1)
    [deleted] = await reaper.sweep(live)
    assert deleted.action is ReapAction.DELETED
    [delete] = deletes(gke_state)
    assert delete.path.endswith(f"/nodePools/{orphan_pool.name}")
    assert pool_names(gke_state) == [live_pool.name]
    assert await reaper.sweep(live) == []


async def test_orphan_with_retain_policy_is_only_reported(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock, clock: FakeClock
) -> None:
    provisioner = make_provisioner(gke_server, step_clock)
    pool = await provisioner.ensure(
        owner=new_owner(), template=TEMPLATE, deletion_policy=DeletionPolicyTag.RETAIN
    )
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    clock.advance(10 * GRACE_S)
    [finding] = await reaper.sweep({})
    assert finding.action is ReapAction.RETAINED
    assert deletes(gke_state) == []
    assert pool_names(gke_state) == [pool.name]


async def test_unlabelled_pool_of_an_orphans_name_is_never_touched(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock, clock: FakeClock
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    add_team_pool(gke_state, name)
    provisioner = make_provisioner(gke_server, step_clock)
    reaper = OrphanReaper(provisioner=provisioner, grace_period_s=0.0, clock=clock)
    assert await reaper.sweep({}) == []
    assert await provisioner.list_owned() == []
    with pytest.raises(OwnershipConflict):
        await provisioner.delete_owned(name=name, owner=owner)
    assert deletes(gke_state) == []
    assert pool_names(gke_state) == [name]
