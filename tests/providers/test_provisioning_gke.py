"""GKE provisioning against the GKE test server over HTTP: create, adopt, stockout fallback."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1
from hypothesis import given
from hypothesis import strategies as st

from crossfade.providers.errors import InsufficientCapacity
from crossfade.providers.gke import GKENodePoolProvider, GKENodePoolRef, make_client
from crossfade.providers.gke_provisioner import (
    GKE_LABEL_KEYS,
    GkeNodePoolProvisioner,
    decode_label_value,
    encode_label_value,
    tags_from_labels,
)
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import (
    DELETION_POLICY_TAG,
    DeletionPolicyTag,
    Owner,
    OwnershipConflict,
    Provisioner,
    node_group_name,
    template_from_placement,
)
from crossfade.providers.provisioning_walk import CreateAttempt
from crossfade.providers.registry import ProviderContext
from crossfade.testing.gke_server import GKEServer, GKEState
from tests.providers.gke_provisioning_support import (
    OPERATION_S,
    PARENT,
    TEMPLATE,
    StepClock,
    add_team_pool,
    creates,
    deletes,
    gke_server,
    gke_state,
    make_provisioner,
    new_owner,
    pool_names,
    step_clock,
)

__all__ = ["gke_server", "gke_state", "step_clock"]

RETAIN = DeletionPolicyTag.RETAIN


@pytest.mark.parametrize(
    "value", ["Retain", "llama.prod", "gcp-standby", "a_b", "9f1c-4e", "", "ü/x y"]
)
def test_label_values_round_trip_and_are_valid_gcp_labels(value: str) -> None:
    encoded = encode_label_value(value)
    assert set(encoded) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_label_value(encoded) == value


@given(st.text())
def test_any_label_value_round_trips_in_gcp_label_characters(value: str) -> None:
    encoded = encode_label_value(value)
    assert set(encoded) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_label_value(encoded) == value


def test_template_zones_come_from_the_placement() -> None:
    template = template_from_placement(
        {
            "name": "gcp",
            "provider": {"type": "GKENodePool"},
            "template": {
                "instanceTypes": ["a3-highgpu-8g"],
                "nodeRole": "nodes@demo",
                "zones": ["us-central1-a", "us-central1-c"],
            },
        }
    )
    assert template.zones == ("us-central1-a", "us-central1-c")


def test_label_keys_are_valid_gcp_label_keys() -> None:
    for key in GKE_LABEL_KEYS.values():
        assert key[0].islower() and "/" not in key and "." not in key and len(key) <= 63


async def test_creates_on_demand_with_labels_taints_zones_and_service_account(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    provisioner = make_provisioner(gke_server, step_clock)
    assert isinstance(provisioner, Provisioner)
    owner = new_owner()
    result = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert result.created and not result.adopted and result.status == "RUNNING"
    assert result.name == node_group_name(owner, attempt=0)
    assert result.instance_type == "a3-highgpu-8g" and result.skipped_types == ()
    [create] = creates(gke_state)
    assert create.body is not None
    sent = container_v1.CreateNodePoolRequest.from_json(
        json.dumps(create.body), ignore_unknown_fields=False
    ).node_pool
    assert sent.locations == ["us-central1-a", "us-central1-b"]
    assert sent.initial_node_count == 1  # 2 nodes over 2 zones
    assert (sent.autoscaling.min_node_count, sent.autoscaling.max_node_count) == (1, 2)
    assert sent.config.service_account == "nodes@demo.iam.gserviceaccount.com"
    assert sent.config.disk_size_gb == 200 and not sent.config.spot
    [taint] = sent.config.taints
    assert (taint.key, taint.value) == ("nvidia.com/gpu", "present")
    assert taint.effect == container_v1.NodeTaint.Effect.NO_SCHEDULE
    with gke_state.lock:
        live = gke_state.pools[f"{PARENT}/nodePools/{result.name}"].to_message()
    assert live.config.labels["crossfade.dev/workload"] == "inference"
    tags = tags_from_labels(live.config.resource_labels)
    assert Owner.from_tags(tags) == owner
    assert tags[DELETION_POLICY_TAG] == "Retain"
    assert live.status == container_v1.NodePool.Status.RUNNING
    assert pool_names(gke_state) == [result.name]


async def test_crash_between_create_and_status_write_adopts_with_one_create(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    first = await make_provisioner(gke_server, step_clock).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    # Crash: the status write never happened; a new process knows nothing but the spec.
    second = await make_provisioner(gke_server, step_clock).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert first.created and second.adopted and not second.created
    assert second.name == first.name
    assert len(creates(gke_state)) == 1
    assert pool_names(gke_state) == [first.name]


async def test_crash_while_the_create_operation_runs_adopts_the_provisioning_pool(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    # Returns as soon as the create is accepted: the crash comes before the operation ends.
    impatient = make_provisioner(gke_server, step_clock, create_wait_s=0.0)
    first = await impatient.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert first.created and first.status == "PROVISIONING"
    second = await make_provisioner(gke_server, step_clock).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert second.adopted and second.status == "PROVISIONING" and second.name == first.name
    assert len(creates(gke_state)) == 1


async def test_lost_create_reply_conflict_is_adopted(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    provisioner = make_provisioner(gke_server, step_clock)
    await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    # The list a restarted process makes missed the pool (it was created in between).
    result = await provisioner.create_candidate(
        CreateAttempt(
            owner=owner,
            template=TEMPLATE,
            deletion_policy=RETAIN,
            name=node_group_name(owner, attempt=0),
            instance_type="a3-highgpu-8g",
            position=0,
            skipped=(),
        )
    )
    assert result is not None and result.adopted and not result.created
    assert len(creates(gke_state)) == 2
    assert pool_names(gke_state) == [node_group_name(owner, attempt=0)]


async def test_stockout_falls_back_to_the_second_machine_type_and_deletes_the_failed_pool(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    gke_state.set_machine_type_stockout("a3-highgpu-8g")
    result = await make_provisioner(gke_server, step_clock).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert result.created and result.instance_type == "a2-ultragpu-8g"
    assert result.skipped_types == ("a3-highgpu-8g",)
    assert result.name == node_group_name(owner, attempt=1)
    sent = [r.body["nodePool"]["config"]["machineType"] for r in creates(gke_state) if r.body]
    assert sent == ["a3-highgpu-8g", "a2-ultragpu-8g"]
    [delete] = deletes(gke_state)
    assert delete.path.endswith(f"/nodePools/{node_group_name(owner, attempt=0)}")
    assert pool_names(gke_state) == [result.name]


async def test_pool_left_in_error_by_a_stockout_is_replaced_on_the_next_pass(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    gke_state.set_machine_type_stockout("a3-highgpu-8g")
    # Returns as soon as the create is accepted: the crash comes before the operation ends.
    impatient = make_provisioner(gke_server, step_clock, create_wait_s=0.0)
    first = await impatient.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert first.created and first.status == "PROVISIONING"
    step_clock.now += 60  # the create operation ends in ZONE_RESOURCE_POOL_EXHAUSTED
    second = await make_provisioner(gke_server, step_clock).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=RETAIN
    )
    assert second.created and second.instance_type == "a2-ultragpu-8g"
    assert second.skipped_types == ("a3-highgpu-8g",)
    assert len(deletes(gke_state)) == 1
    assert pool_names(gke_state) == [second.name]


async def test_created_pool_that_cannot_grow_for_a_stockout_is_passed_over_not_deleted(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    provisioner = make_provisioner(gke_server, step_clock)
    first = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    gke_state.set_stockout(f"{PARENT}/nodePools/{first.name}", zone="us-central1-a")
    scaler = GKENodePoolProvider(
        ref=GKENodePoolRef("demo", "us-central1", "serving", first.name),
        client=make_client(endpoint=gke_server.endpoint, credentials=AnonymousCredentials()),
        operation_wait_s=2 * OPERATION_S,
        sleep=step_clock.sleep,
        clock=step_clock,
    )
    with pytest.raises(InsufficientCapacity):
        await scaler.scale(desired=4, token="grow")
    second = await provisioner.ensure(owner=owner, template=TEMPLATE, deletion_policy=RETAIN)
    assert second.created and second.instance_type == "a2-ultragpu-8g"
    assert second.skipped_types == ("a3-highgpu-8g",)
    assert deletes(gke_state) == []
    assert pool_names(gke_state) == sorted([first.name, second.name])


async def test_every_machine_type_stocked_out_raises_insufficient_capacity(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    for machine_type in TEMPLATE.instance_types:
        gke_state.set_machine_type_stockout(machine_type)
    with pytest.raises(InsufficientCapacity) as caught:
        await make_provisioner(gke_server, step_clock).ensure(
            owner=new_owner(), template=TEMPLATE, deletion_policy=RETAIN
        )
    assert caught.value.code == "AllInstanceTypesExhausted"
    assert len(creates(gke_state)) == 2
    assert pool_names(gke_state) == []


async def test_unlabelled_pool_of_the_same_name_is_never_adopted(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    owner = new_owner()
    name = node_group_name(owner, attempt=0)
    add_team_pool(gke_state, name)
    with pytest.raises(OwnershipConflict):
        await make_provisioner(gke_server, step_clock).ensure(
            owner=owner, template=TEMPLATE, deletion_policy=RETAIN
        )
    assert creates(gke_state) == [] and deletes(gke_state) == []
    assert pool_names(gke_state) == [name]


async def test_spot_and_reservation_reach_the_node_config(
    gke_server: GKEServer, gke_state: GKEState, step_clock: StepClock
) -> None:
    template = replace(TEMPLATE, capacity_type="SPOT", capacity_reservation_id="h100-block")
    await make_provisioner(gke_server, step_clock).ensure(
        owner=new_owner(), template=template, deletion_policy=RETAIN
    )
    [create] = creates(gke_state)
    assert create.body is not None
    config = container_v1.CreateNodePoolRequest.from_json(
        json.dumps(create.body), ignore_unknown_fields=False
    ).node_pool.config
    assert config.spot
    affinity = config.reservation_affinity
    assert affinity.consume_reservation_type == (
        container_v1.ReservationAffinity.Type.SPECIFIC_RESERVATION
    )
    assert affinity.key == "compute.googleapis.com/reservation-name"
    assert list(affinity.values) == ["h100-block"]


async def test_registry_builds_the_gke_provisioner_for_a_templated_placement(
    gke_server: GKEServer, gke_state: GKEState
) -> None:
    placement = {
        "name": "gcp-standby",
        "provider": {
            "type": "GKENodePool",
            "gkeNodePool": {"project": "demo", "location": "us-central1", "cluster": "serving"},
        },
        "template": {"instanceTypes": ["a3-highgpu-8g"], "nodeRole": "nodes@demo"},
    }
    context = ProviderContext(
        gke_endpoint=gke_server.endpoint, gke_credentials=AnonymousCredentials()
    )
    provisioner = provisioner_for(placement, context)
    assert isinstance(provisioner, GkeNodePoolProvisioner)
    assert provisioner.parent == PARENT
    assert await provisioner.list_owned() == []
    assert gke_state.requests_of("GET", f"{PARENT}/nodePools")
