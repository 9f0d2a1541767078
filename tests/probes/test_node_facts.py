"""Pure extraction of node facts and their summary."""

from __future__ import annotations

from typing import Any

from crossfade.probes.nodes import NodeFacts, label_selector, node_facts, summarize


def raw_node(
    name: str,
    *,
    ready: str = "True",
    unschedulable: bool = False,
    allocatable: dict[str, str] | None = None,
    created: str | None = "2026-11-26T10:00:00Z",
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if created:
        metadata["creationTimestamp"] = created
    return {
        "metadata": metadata,
        "spec": {"unschedulable": unschedulable} if unschedulable else {},
        "status": {
            "allocatable": allocatable or {},
            "conditions": [{"type": "MemoryPressure", "status": "False"}]
            + ([{"type": "Ready", "status": ready}] if ready else []),
        },
    }


def test_facts_of_each_accelerator_kind() -> None:
    assert node_facts(raw_node("a", allocatable={"nvidia.com/gpu": "8"})).accelerators == 8
    assert node_facts(raw_node("b", allocatable={"aws.amazon.com/neuron": "16"})).accelerators == 16
    assert node_facts(raw_node("c", allocatable={"google.com/tpu": "4"})).accelerators == 4
    assert node_facts(raw_node("d", allocatable={"cpu": "96"})).accelerators == 0
    assert node_facts(raw_node("e", allocatable={"nvidia.com/gpu": "junk"})).accelerators == 0


def test_ready_needs_a_true_ready_condition() -> None:
    assert node_facts(raw_node("a")).ready
    assert not node_facts(raw_node("a", ready="False")).ready
    assert not node_facts(raw_node("a", ready="Unknown")).ready
    assert not node_facts(raw_node("a", ready="")).ready
    assert not node_facts({}).ready


def test_creation_time_and_cordon() -> None:
    facts = node_facts(raw_node("a", unschedulable=True))
    assert facts.cordoned
    assert facts.created_at == 1795687200.0  # 2026-11-26T10:00:00Z
    assert node_facts(raw_node("a", created=None)).created_at is None


def test_summary_counts_accelerators_only_on_ready_schedulable_nodes() -> None:
    facts = [
        NodeFacts("ready", True, False, 8, 100.0),
        NodeFacts("cordoned", True, True, 8, 100.0),
        NodeFacts("notready", False, False, 8, 190.0),
        NodeFacts("noage", True, False, 4, None),
    ]
    summary = summarize(facts, now=200.0)
    assert (summary.total, summary.ready, summary.not_ready, summary.cordoned) == (4, 3, 1, 1)
    assert summary.allocatable_accelerators == 12
    assert summary.ages_s == {"ready": 100.0, "cordoned": 100.0, "notready": 10.0}
    observation = summary.to_observation(placement="p", at=200.0)
    assert (observation.ready_nodes, observation.total_nodes, observation.cordoned) == (3, 4, 1)
    assert observation.allocatable_accelerators == 12 and observation.not_ready == 1


def test_label_selector_is_sorted_and_joined() -> None:
    assert label_selector({"b": "2", "a": "1"}) == "a=1,b=2"
