"""The node simulator makes real Node objects follow a node group's desired size."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from crossfade.testing.controlplane import TestCluster
from crossfade.testing.node_simulator import EKS_NODEGROUP_LABEL, NodeSimulator, SimulatedNodeGroup


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ready_nodes(nodes: list[client.V1Node]) -> int:
    return sum(
        1
        for node in nodes
        for cond in (node.status.conditions or [])
        if cond.type == "Ready" and cond.status == "True"
    )


async def test_nodes_follow_desired_size_with_boot_delay(
    cloud_clusters: dict[str, TestCluster],
) -> None:
    desired = {"size": 2}

    async def desired_size() -> int:
        return desired["size"]

    clock = FakeClock()
    group = SimulatedNodeGroup.eks("sim-gpu", boot_delay_s=30.0, accelerators_per_node=4)
    api = await cloud_clusters["aws"].async_api_client()
    async with api:
        sim = NodeSimulator(api=api, group=group, desired_size=desired_size, clock=clock)
        core = client.CoreV1Api(api)
        selector = f"{EKS_NODEGROUP_LABEL}=sim-gpu"

        assert await sim.reconcile_once() == 0
        nodes = (await core.list_node(label_selector=selector)).items
        assert len(nodes) == 2 and ready_nodes(nodes) == 0

        clock.now += 31
        assert await sim.reconcile_once() == 2
        nodes = (await core.list_node(label_selector=selector)).items
        assert ready_nodes(nodes) == 2
        assert {n.status.allocatable["nvidia.com/gpu"] for n in nodes} == {"4"}

        sim.lose_accelerators()
        await sim.reconcile_once()
        nodes = (await core.list_node(label_selector=selector)).items
        assert {n.status.allocatable["nvidia.com/gpu"] for n in nodes} == {"0"}

        sim.set_ready(False)
        assert await sim.reconcile_once() == 0
        assert ready_nodes((await core.list_node(label_selector=selector)).items) == 0

        desired["size"] = 1
        sim.set_ready(True)
        assert await sim.reconcile_once() == 1
        assert len((await core.list_node(label_selector=selector)).items) == 1


@pytest.mark.parametrize("size", [0, 3])
async def test_scale_from_and_to_zero(cloud_clusters: dict[str, TestCluster], size: int) -> None:
    async def desired_size() -> int:
        return size

    group = SimulatedNodeGroup.gke(f"pool-{size}", boot_delay_s=0.0)
    api = await cloud_clusters["gcp"].async_api_client()
    async with api:
        sim = NodeSimulator(api=api, group=group, desired_size=desired_size)
        assert await sim.reconcile_once() == size
