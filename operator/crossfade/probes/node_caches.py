"""Shared node caches: one watch per (cluster, selector), reference-counted across pools.

Pools that name the same node group share one watch; the last pool to let go stops it, so
deleting or editing pools never leaves a watch running. Also maps a placement's provider
onto the labels its cloud puts on the nodes it launches.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes_asyncio import client

from crossfade.api import Provider, ProviderType
from crossfade.probes.nodes import DEFAULT_WATCH_TIMEOUT_S, NodeCache, label_selector

EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
CAPI_DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"


def node_labels_for(provider: Provider) -> dict[str, str]:
    """The labels the cloud sets on every node of this placement's node group."""
    if provider.type is ProviderType.EKS_NODE_GROUP and provider.eks_node_group:
        return {EKS_NODEGROUP_LABEL: provider.eks_node_group.nodegroup}
    if provider.type is ProviderType.GKE_NODE_POOL and provider.gke_node_pool:
        return {GKE_NODEPOOL_LABEL: provider.gke_node_pool.node_pool}
    if provider.type is ProviderType.CLUSTER_API and provider.cluster_api:
        return {CAPI_DEPLOYMENT_LABEL: provider.cluster_api.machine_deployment}
    if provider.type is ProviderType.KARPENTER_NODE_POOL and provider.karpenter_node_pool:
        return {KARPENTER_NODEPOOL_LABEL: provider.karpenter_node_pool.node_pool}
    raise ValueError(f"provider {provider.type} has no {provider.type} member set")


@dataclass(slots=True)
class _Entry:
    cache: NodeCache
    users: int


class NodeCacheRegistry:
    """Hands out started NodeCaches and stops each when its last user releases it."""

    def __init__(self, *, watch_timeout_s: int = DEFAULT_WATCH_TIMEOUT_S) -> None:
        self._watch_timeout_s = watch_timeout_s
        self._entries: dict[tuple[str, str], _Entry] = {}

    def acquire(self, *, cluster: str, api: client.ApiClient, labels: dict[str, str]) -> NodeCache:
        """A running cache of the Nodes matching ``labels`` in ``cluster`` (a stable key)."""
        key = (cluster, label_selector(labels))
        entry = self._entries.get(key)
        if entry is None:
            cache = NodeCache(api, selector=key[1], watch_timeout_s=self._watch_timeout_s)
            cache.start()
            entry = self._entries[key] = _Entry(cache=cache, users=0)
        entry.users += 1
        return entry.cache

    async def release(self, *, cluster: str, labels: dict[str, str]) -> None:
        key = (cluster, label_selector(labels))
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.users -= 1
        if entry.users <= 0:
            del self._entries[key]
            await entry.cache.stop()

    def active(self) -> dict[tuple[str, str], int]:
        """(cluster, selector) -> number of users, for tests and metrics."""
        return {key: entry.users for key, entry in sorted(self._entries.items())}

    async def close(self) -> None:
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await entry.cache.stop()
