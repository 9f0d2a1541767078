"""Node caches are shared per (cluster, selector) and stopped when the last user lets go."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from kubernetes_asyncio import client

from crossfade.api import Provider
from crossfade.probes.node_caches import NodeCacheRegistry, node_labels_for
from crossfade.probes.nodes import NodeSummary
from crossfade.testing.controlplane import TestCluster

WAIT_S = 20.0


@pytest.mark.parametrize(
    ("wire", "labels"),
    [
        (
            {
                "type": "EKSNodeGroup",
                "eksNodeGroup": {"region": "us-east-1", "cluster": "prod", "nodegroup": "gpu-a"},
            },
            {"eks.amazonaws.com/nodegroup": "gpu-a"},
        ),
        (
            {
                "type": "GKENodePool",
                "gkeNodePool": {
                    "project": "my-project",
                    "location": "europe-west4",
                    "cluster": "prod",
                    "nodePool": "tpu-b",
                },
            },
            {"cloud.google.com/gke-nodepool": "tpu-b"},
        ),
        (
            {
                "type": "ClusterAPI",
                "clusterAPI": {
                    "kubeconfigSecretRef": {"name": "mgmt", "key": "value"},
                    "namespace": "capi",
                    "machineDeployment": "md-gpu",
                },
            },
            {"cluster.x-k8s.io/deployment-name": "md-gpu"},
        ),
        (
            {"type": "KarpenterNodePool", "karpenterNodePool": {"nodePool": "gpu"}},
            {"karpenter.sh/nodepool": "gpu"},
        ),
    ],
)
def test_node_labels_follow_the_provider(wire: dict[str, object], labels: dict[str, str]) -> None:
    assert node_labels_for(Provider.model_validate(wire)) == labels


async def test_shared_cache_stops_with_its_last_user(
    cloud_clusters: dict[str, TestCluster],
) -> None:
    group = f"reg-{uuid.uuid4().hex[:6]}"
    labels = {"eks.amazonaws.com/nodegroup": group}
    api = await cloud_clusters["aws"].async_api_client()
    async with api:
        registry = NodeCacheRegistry()
        first = registry.acquire(cluster="aws", api=api, labels=labels)
        second = registry.acquire(cluster="aws", api=api, labels=labels)
        other = registry.acquire(cluster="gcp", api=api, labels=labels)
        assert first.cache is second.cache and first.cache is not other.cache
        assert registry.active() == {
            ("aws", "eks.amazonaws.com/nodegroup"): 2,
            ("gcp", "eks.amazonaws.com/nodegroup"): 1,
        }
        await client.CoreV1Api(api).create_node(
            client.V1Node(metadata=client.V1ObjectMeta(name=f"{group}-n", labels=labels))
        )
        summary = await first.wait_until(lambda s: s.total == 1, timeout_s=WAIT_S)
        assert summary.ready == 0

        task = first.cache._task
        await registry.release(cluster="aws", labels=labels)
        assert task is not None and not task.done()
        await registry.release(cluster="aws", labels=labels)
        assert task.done() and first.cache._task is None
        await registry.release(cluster="aws", labels=labels)  # releasing twice is harmless

        other_task = other.cache._task
        await registry.close()
        assert other_task is not None and other_task.done()
        assert registry.active() == {}


def has_nodes(count: int) -> Callable[[NodeSummary], bool]:
    return lambda summary: summary.total == count


async def test_node_groups_of_one_cluster_share_one_watch_and_count_apart(
    cloud_clusters: dict[str, TestCluster],
) -> None:
    run = uuid.uuid4().hex[:6]
    label = "cloud.google.com/gke-nodepool"
    groups = {f"a-{run}": 2, f"b-{run}": 1}
    api = await cloud_clusters["gcp"].async_api_client()
    async with api:
        registry = NodeCacheRegistry()
        views = {g: registry.acquire(cluster="gcp", api=api, labels={label: g}) for g in groups}
        view_a, view_b = views.values()
        assert view_a.cache is view_b.cache
        assert registry.active() == {("gcp", label): 2}
        core = client.CoreV1Api(api)
        for group, count in groups.items():
            for index in range(count):
                await core.create_node(
                    client.V1Node(
                        metadata=client.V1ObjectMeta(name=f"{group}-{index}", labels={label: group})
                    )
                )
        for group, count in groups.items():
            summary = await views[group].wait_until(has_nodes(count), timeout_s=WAIT_S)
            assert summary.total == count

        # A Node relabelled into the other group moves between the two counts.
        await core.patch_node(f"a-{run}-1", {"metadata": {"labels": {label: f"b-{run}"}}})
        moved = await view_b.wait_until(lambda s: s.total == 2, timeout_s=WAIT_S)
        assert moved.total == 2
        assert view_a.summary().total == 1

        await core.delete_node(f"a-{run}-0")
        emptied = await view_a.wait_until(lambda s: s.total == 0, timeout_s=WAIT_S)
        assert emptied.total == 0
        assert view_b.observe(placement="standby").total_nodes == 2
        await registry.close()


async def test_a_readiness_change_calls_the_listeners_of_its_group_only(
    cloud_clusters: dict[str, TestCluster],
) -> None:
    """Pool passes are woken by these calls (a NotReady outage must not wait for a period)."""
    run = uuid.uuid4().hex[:6]
    label = "cloud.google.com/gke-nodepool"
    api = await cloud_clusters["gcp"].async_api_client()
    async with api:
        registry = NodeCacheRegistry()
        mine = registry.acquire(cluster="gcp", api=api, labels={label: f"mine-{run}"})
        other = registry.acquire(cluster="gcp", api=api, labels={label: f"other-{run}"})
        core = client.CoreV1Api(api)
        name = f"mine-{run}-0"
        await core.create_node(
            client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={label: f"mine-{run}"}))
        )
        await mine.wait_until(has_nodes(1), timeout_s=WAIT_S)
        calls: dict[str, int] = {"mine": 0, "other": 0}
        unlisten = mine.listen(lambda: calls.__setitem__("mine", calls["mine"] + 1))
        other.listen(lambda: calls.__setitem__("other", calls["other"] + 1))

        await core.patch_node(name, {"metadata": {"annotations": {"touched": "yes"}}})
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
        await core.patch_node_status(name, {"status": {"conditions": [ready]}})
        await mine.wait_until(lambda s: s.ready == 1, timeout_s=WAIT_S)
        assert calls == {"mine": 1, "other": 0}  # the annotation alone told nobody

        unlisten()
        await core.patch_node(name, {"spec": {"unschedulable": True}})
        await mine.wait_until(lambda s: s.cordoned == 1, timeout_s=WAIT_S)
        assert calls == {"mine": 1, "other": 0}
        await registry.close()
