"""The node cache follows real Nodes in a real kube-apiserver through its watch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.probes.nodes import NodeCache, NodeSummary, WatchExpiredError
from crossfade.testing.controlplane import TestCluster

LABEL = "crossfade.dev/test-nodegroup"
WAIT_S = 20.0  # an upper bound for the watch to deliver; normally milliseconds


@pytest.fixture
async def api(cloud_clusters: dict[str, TestCluster]) -> AsyncIterator[client.ApiClient]:
    api_client = await cloud_clusters["aws"].async_api_client()
    async with api_client:
        yield api_client


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


async def create_node(
    core: client.CoreV1Api, name: str, *, group: str, gpus: int = 8, ready: bool = True
) -> None:
    await core.create_node(
        client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={LABEL: group}))
    )
    await set_status(core, name, gpus=gpus, ready=ready)


async def set_status(core: client.CoreV1Api, name: str, *, gpus: int, ready: bool) -> None:
    resources = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)}
    status: dict[str, Any] = {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "message": "test",
                "lastHeartbeatTime": "2026-11-26T10:00:00Z",
                "lastTransitionTime": "2026-11-26T10:00:00Z",
            }
        ],
    }
    await core.patch_node_status(name, {"status": status})


def counts(summary: NodeSummary) -> tuple[int, int, int, int, int]:
    return (
        summary.total,
        summary.ready,
        summary.not_ready,
        summary.cordoned,
        summary.allocatable_accelerators,
    )


async def wait_for(cache: NodeCache, expected: tuple[int, int, int, int, int]) -> NodeSummary:
    return await cache.wait_until(lambda s: counts(s) == expected, timeout_s=WAIT_S)


async def test_counts_follow_node_changes(api: client.ApiClient, group: str) -> None:
    core = client.CoreV1Api(api)
    for index in range(3):
        await create_node(core, f"{group}-{index}", group=group)
    await create_node(core, f"{group}-other", group=f"{group}-x")  # not selected
    async with NodeCache(api, selector=f"{LABEL}={group}") as cache:
        summary = await wait_for(cache, (3, 3, 0, 0, 24))
        assert set(summary.ages_s) == {f"{group}-{i}" for i in range(3)}
        assert cache.lists == 1

        await set_status(core, f"{group}-0", gpus=8, ready=False)
        await wait_for(cache, (3, 2, 1, 0, 16))

        await core.patch_node(f"{group}-1", {"spec": {"unschedulable": True}})
        await wait_for(cache, (3, 2, 1, 1, 8))

        await set_status(core, f"{group}-2", gpus=0, ready=True)  # lost its GPUs
        await wait_for(cache, (3, 2, 1, 1, 0))

        await core.delete_node(f"{group}-0")
        await wait_for(cache, (2, 2, 0, 1, 0))

        await create_node(core, f"{group}-3", group=group, gpus=4)
        await wait_for(cache, (3, 3, 0, 1, 4))

        # relabelled away: the label-selected watch reports it gone
        await core.patch_node(f"{group}-3", {"metadata": {"labels": {LABEL: "elsewhere"}}})
        await wait_for(cache, (2, 2, 0, 1, 0))

        observation = cache.observe(placement="eks-a")
        assert (observation.placement, observation.total_nodes, observation.cordoned) == (
            "eks-a",
            2,
            1,
        )
        assert cache.lists == 1  # all of that came through the watch, no re-list


async def test_watch_that_ends_is_resumed_without_listing_again(
    api: client.ApiClient, group: str
) -> None:
    core = client.CoreV1Api(api)
    async with NodeCache(api, selector=f"{LABEL}={group}", watch_timeout_s=1) as cache:
        await wait_for(cache, (0, 0, 0, 0, 0))
        watches_before = cache.watches
        await cache.wait_until(lambda _: cache.watches > watches_before, timeout_s=WAIT_S)
        await create_node(core, f"{group}-late", group=group, gpus=2)
        await wait_for(cache, (1, 1, 0, 0, 2))
        assert cache.lists == 1 and cache.watches >= 2


async def test_expired_watch_leads_to_a_fresh_list(
    api: client.ApiClient, group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh apiserver never compacts within a test, so 410 Gone is injected at the point
    # where the watch would have raised it; everything else is the real list and watch.
    core = client.CoreV1Api(api)
    await create_node(core, f"{group}-0", group=group, gpus=1)
    cache = NodeCache(api, selector=f"{LABEL}={group}")
    real_watch = cache._watch
    calls = {"n": 0}

    async def expire_first_watch(resource_version: str) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise WatchExpiredError("too old resource version")
        return await real_watch(resource_version)

    monkeypatch.setattr(cache, "_watch", expire_first_watch)
    async with cache:
        await cache.wait_until(lambda _: cache.lists >= 2, timeout_s=WAIT_S)
        await create_node(core, f"{group}-1", group=group, gpus=1)
        await wait_for(cache, (2, 2, 0, 0, 2))
    assert cache.lists == 2


async def test_error_event_410_raises_expired_and_others_raise_api_errors(
    api: client.ApiClient,
) -> None:
    cache = NodeCache(api, selector="x=y")
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    with pytest.raises(WatchExpiredError):
        await cache._apply(gone, "5")
    other = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}
    with pytest.raises(ApiException):
        await cache._apply(other, "5")
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
    assert await cache._apply(bookmark, "5") == "9"


async def test_stop_cancels_the_watch_task(api: client.ApiClient, group: str) -> None:
    cache = NodeCache(api, selector=f"{LABEL}={group}")
    cache.start()
    await wait_for(cache, (0, 0, 0, 0, 0))
    task = cache._task
    await cache.stop()
    assert task is not None and task.done()
