"""Provisioning contract units: deterministic names, ownership tags, reaper decisions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossfade.api import parse_pool
from crossfade.providers.errors import InvalidRequest
from crossfade.providers.provisioning import (
    DELETION_POLICY_TAG,
    NODE_GROUP_NAME_MAX_CHARS,
    OWNER_POOL_UID_TAG,
    DeletionPolicyTag,
    NodeGroupTemplate,
    OwnedNodeGroup,
    Owner,
    Taint,
    deletion_policy_of,
    node_group_name,
    template_from_placement,
)
from crossfade.providers.reaper import ReapAction, decide, is_orphan
from tests.api.samples import base_pool

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
placements = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)


@given(placement=placements, uid=st.uuids(), attempt=st.integers(0, 9))
def test_names_are_short_dns_labels_and_stable(placement: str, uid: object, attempt: int) -> None:
    owner = Owner(namespace="ns", pool="p", placement=placement, pool_uid=str(uid))
    name = node_group_name(owner, attempt=attempt)
    assert len(name) <= NODE_GROUP_NAME_MAX_CHARS and DNS_LABEL.match(name)
    assert name == node_group_name(Owner("other", "x", placement, str(uid)), attempt=attempt)


def test_names_differ_by_pool_uid_placement_and_attempt() -> None:
    a = Owner("ns", "pool", "aws-standby", "uid-1")
    names = {
        node_group_name(a),
        node_group_name(a, attempt=1),
        node_group_name(Owner("ns", "pool", "aws-standby", "uid-2")),
        node_group_name(Owner("ns", "pool", "aws-standby-2", "uid-1")),
    }
    assert len(names) == 4


def test_tags_round_trip_and_partial_tags_are_not_ours() -> None:
    owner = Owner("serving", "llama", "aws-a", "uid-1")
    tags = owner.tags(deletion_policy=DeletionPolicyTag.DELETE)
    assert Owner.from_tags(tags) == owner
    assert deletion_policy_of(tags) is DeletionPolicyTag.DELETE
    partial = {k: v for k, v in tags.items() if k != OWNER_POOL_UID_TAG}
    assert Owner.from_tags(partial) is None
    assert deletion_policy_of({**tags, DELETION_POLICY_TAG: "Bogus"}) is DeletionPolicyTag.RETAIN


def test_template_needs_an_instance_type_and_ordered_sizes() -> None:
    with pytest.raises(ValueError):
        NodeGroupTemplate(instance_types=(), subnets=(), node_role="r", min_size=0, max_size=1)
    with pytest.raises(ValueError):
        NodeGroupTemplate(
            instance_types=("p5.48xlarge",), subnets=(), node_role="r", min_size=2, max_size=1
        )


def _group(policy: DeletionPolicyTag, placement: str = "aws-a") -> OwnedNodeGroup:
    owner = Owner("ns", "pool", placement, "uid-1")
    return OwnedNodeGroup(name="cf-x", owner=owner, deletion_policy=policy, status="ACTIVE")


def test_orphan_when_pool_uid_or_placement_is_gone() -> None:
    group = _group(DeletionPolicyTag.DELETE)
    assert not is_orphan(group, {"uid-1": frozenset({"aws-a"})})
    assert is_orphan(group, {"uid-1": frozenset({"aws-b"})})
    assert is_orphan(group, {"uid-2": frozenset({"aws-a"})})


@given(
    policy=st.sampled_from(DeletionPolicyTag), age_s=st.floats(0, 1e6), grace_s=st.floats(0, 1e6)
)
def test_only_delete_policy_past_grace_deletes(
    policy: DeletionPolicyTag, age_s: float, grace_s: float
) -> None:
    action = decide(_group(policy), orphaned_since=0.0, now=age_s, grace_period_s=grace_s)
    deletes = policy is DeletionPolicyTag.DELETE and age_s >= grace_s
    assert (action is ReapAction.DELETED) == deletes
    if policy is not DeletionPolicyTag.DELETE:
        assert action is ReapAction.RETAINED


def test_template_from_a_validated_placement() -> None:
    body = base_pool("p")
    placement = body["spec"]["placements"][1]
    placement["template"] = {
        "instanceTypes": ["p5.48xlarge", "p4d.24xlarge"],
        "capacityType": "Spot",
        "labels": [{"key": "crossfade.dev/workload", "value": "inference"}],
        "taints": [{"key": "nvidia.com/gpu", "effect": "NoExecute"}],
        "nodeRole": "arn:aws:iam::123456789012:role/node",
    }
    wire = parse_pool(body).to_wire()["spec"]["placements"][1]
    template = template_from_placement(wire)
    assert template.instance_types == ("p5.48xlarge", "p4d.24xlarge")
    assert template.capacity_type == "SPOT"
    assert (template.min_size, template.max_size) == (0, 4)
    assert template.labels == {"crossfade.dev/workload": "inference"}
    assert template.taints == (Taint(key="nvidia.com/gpu", value="", effect="NoExecute"),)
    del placement["template"]["nodeRole"]
    with pytest.raises(InvalidRequest):
        template_from_placement(parse_pool(body).to_wire()["spec"]["placements"][1])
