"""Shared node caches: one watch per (cluster, node-group label), reference-counted.

Every placement whose nodes a cluster labels with the same key (``eks.amazonaws.com/
nodegroup``, ``cloud.google.com/gke-nodepool``, ...) shares one watch of the Nodes carrying
that key, and reads its own group through a ``NodeGroupView``: 1000 pools on one EKS
cluster hold one watch, not 1000 (each watch is a TLS connection with a 256 KiB asyncio read
buffer, the largest per-pool cost the memory profile found, bench/results/memory.md). The
last placement to let go stops the watch, so deleting or editing pools never leaves one
running. Also maps a placement's provider onto the labels its cloud puts on its nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kubernetes_asyncio import client

from crossfade.api import Provider, ProviderType
from crossfade.engine.observations import NodeObservation
from crossfade.probes.nodes import DEFAULT_WATCH_TIMEOUT_S, NodeCache, NodeSummary, label_selector

EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
CAPI_DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"


def node_labels_for(provider: Provider) -> dict[str, str]:
    """The labels the cloud sets on every node of this placement's node group.

    Raises ValueError when the provider names no node group: a templated placement may leave
    the name out, and its observer passes the name of the node group crossfade created.
    """
    label, name = _node_group_label(provider)
    if name is None:
        raise ValueError(f"provider {provider.type} names no node group")
    return {label: name}


def _node_group_label(provider: Provider) -> tuple[str, str | None]:
    if provider.type is ProviderType.EKS_NODE_GROUP and provider.eks_node_group:
        return EKS_NODEGROUP_LABEL, provider.eks_node_group.nodegroup
    if provider.type is ProviderType.GKE_NODE_POOL and provider.gke_node_pool:
        return GKE_NODEPOOL_LABEL, provider.gke_node_pool.node_pool
    if provider.type is ProviderType.CLUSTER_API and provider.cluster_api:
        return CAPI_DEPLOYMENT_LABEL, provider.cluster_api.machine_deployment
    if provider.type is ProviderType.KARPENTER_NODE_POOL and provider.karpenter_node_pool:
        return KARPENTER_NODEPOOL_LABEL, provider.karpenter_node_pool.node_pool
    raise ValueError(f"provider {provider.type} has no {provider.type} member set")


@dataclass(slots=True)
class _Entry:
    cache: NodeCache
    users: int


@dataclass(frozen=True, slots=True)
class NodeGroupView:
    """One node group's Nodes as seen by a shared cache (``group`` None: all its Nodes)."""

    cache: NodeCache
    group: str | None

    @property
    def synced(self) -> bool:
        return self.cache.synced

    @property
    def selector(self) -> str:
        return self.cache.selector

    def summary(self, *, now: float | None = None) -> NodeSummary:
        return self.cache.summary(now=now, group=self.group)

    def observe(self, *, placement: str) -> NodeObservation:
        return self.cache.observe(placement=placement, group=self.group)

    async def wait_until(
        self, predicate: Callable[[NodeSummary], bool], *, timeout_s: float
    ) -> NodeSummary:
        return await self.cache.wait_until(predicate, timeout_s=timeout_s, group=self.group)

    def listen(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` when one of this group's Nodes changes readiness (see NodeCache)."""
        return self.cache.listen(self.group, callback)


def _watch_of(labels: dict[str, str]) -> tuple[str, str, str | None]:
    """(selector of the shared watch, label it groups by, this group's value).

    One label (every provider's case): watch the label's key, group by it. Otherwise the
    exact selector, ungrouped.
    """
    if len(labels) == 1:
        ((key, value),) = labels.items()
        return key, key, value
    return label_selector(labels), "", None


class NodeCacheRegistry:
    """Hands out views of started NodeCaches; stops each cache when its last user lets go."""

    def __init__(self, *, watch_timeout_s: int = DEFAULT_WATCH_TIMEOUT_S) -> None:
        self._watch_timeout_s = watch_timeout_s
        self._entries: dict[tuple[str, str], _Entry] = {}

    def acquire(
        self, *, cluster: str, api: client.ApiClient, labels: dict[str, str]
    ) -> NodeGroupView:
        """The Nodes matching ``labels`` in ``cluster`` (a stable key), from a running cache."""
        selector, group_label, group = _watch_of(labels)
        key = (cluster, selector)
        entry = self._entries.get(key)
        if entry is None:
            cache = NodeCache(
                api,
                selector=selector,
                watch_timeout_s=self._watch_timeout_s,
                group_label=group_label,
            )
            cache.start()
            entry = self._entries[key] = _Entry(cache=cache, users=0)
        entry.users += 1
        return NodeGroupView(cache=entry.cache, group=group)

    async def release(self, *, cluster: str, labels: dict[str, str]) -> None:
        key = (cluster, _watch_of(labels)[0])
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
