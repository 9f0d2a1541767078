"""Node observers of placements sharing a kubeconfig Secret leave no aiohttp session open.

Observers start concurrently (every placement's first pass); each reads the Secret and
builds a cluster client. Only one can be kept in ``SharedClients.cluster_clients``; the
others must be closed, or their sessions outlive ``SharedClients.close`` and asyncio logs
"Unclosed client session" when the operator stops.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import warnings
from typing import Any

import aiohttp
import yaml
from kubernetes import client as sync_client

from crossfade.handlers.probe_feed import ScheduledProbes
from crossfade.handlers.wiring import NodeObserver, SharedClients, _news_of
from crossfade.testing.controlplane import TestCluster

SECRET = "shared-kubeconfig"


def open_sessions() -> set[int]:
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, aiohttp.ClientSession) and not obj.closed
    }


def placement(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": "us-east-1", "cluster": "prod", "nodegroup": name},
        },
        "clusterRef": {"name": SECRET, "key": "value"},
    }


async def test_concurrent_starts_on_one_secret_close_every_client(
    management_cluster: TestCluster, namespace: str
) -> None:
    raw = yaml.safe_dump(management_cluster.kubeconfig_dict()).encode()
    with management_cluster.api_client() as api:
        sync_client.CoreV1Api(api).create_namespaced_secret(
            namespace,
            sync_client.V1Secret(
                metadata=sync_client.V1ObjectMeta(name=SECRET),
                data={"value": base64.b64encode(raw).decode()},
            ),
        )
    before = open_sessions()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clients = SharedClients(kube_api_client=await management_cluster.async_api_client())
        observers = [
            NodeObserver(placement=placement(name), namespace=namespace, clients=clients)
            for name in ("a", "b", "c")
        ]
        await asyncio.gather(*(observer.observe() for observer in observers))
        assert list(clients.cluster_clients) == [f"{namespace}/{SECRET}/value"]
        for observer in observers:
            await observer.close()
        await clients.close()
        del observers, clients
        gc.collect()
        left_open = open_sessions() - before
    unclosed = [str(w.message) for w in caught if "Unclosed client session" in str(w.message)]
    assert (left_open, unclosed) == (set(), [])


async def test_a_node_readiness_change_is_news_for_the_pool(
    management_cluster: TestCluster, namespace: str
) -> None:
    """The node observer wires its cache's readiness changes to the pool's wake-up."""
    woken: list[str] = []
    probes = ScheduledProbes(on_news=woken.append)
    clients = SharedClients(kube_api_client=await management_cluster.async_api_client())
    group = f"ng-{namespace}"
    wire = {
        "name": "aws",
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": "us-east-1", "cluster": "prod", "nodegroup": group},
        },
    }
    observer = NodeObserver(
        placement=wire,
        namespace=namespace,
        clients=clients,
        on_change=_news_of(probes, pool=f"{namespace}/chat"),
    )
    try:
        for _ in range(200):  # until the cache has listed (observe() says None before)
            if await observer.observe() is not None:
                break
            await asyncio.sleep(0.05)
        with management_cluster.api_client() as api:
            core = sync_client.CoreV1Api(api)
            core.create_node(
                sync_client.V1Node(
                    metadata=sync_client.V1ObjectMeta(
                        name=group, labels={"eks.amazonaws.com/nodegroup": group}
                    )
                )
            )
            try:
                for _ in range(200):
                    if woken:
                        break
                    await asyncio.sleep(0.05)
            finally:
                core.delete_node(group)
        assert woken and set(woken) == {f"{namespace}/chat"}
    finally:
        await observer.close()
        await clients.close()
