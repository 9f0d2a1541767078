"""Simulated nodes: make Node objects in a real apiserver follow a fake cloud's node group size.

A real cloud boots an instance, the kubelet registers a Node, and it turns Ready minutes
later with its accelerators allocatable. Here a small loop reads the node group's desired
size from the cloud double (moto's EKS node group, the GKE test server) and creates or
deletes Nodes with the labels the real cloud would set, turning them Ready after a boot
delay. Faults: ``set_ready(False)`` flips every node of the group to NotReady, and
``lose_accelerators()`` zeroes their allocatable accelerators.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

DesiredSize = Callable[[], Awaitable[int]]

EKS_NODEGROUP_LABEL = "eks.amazonaws.com/nodegroup"
GKE_NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
CAPI_DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
SIMULATED_LABEL = "crossfade.dev/simulated-node"


@dataclass(frozen=True)
class SimulatedNodeGroup:
    """What the nodes of one node group look like."""

    name: str
    labels: dict[str, str]
    accelerator_resource: str = "nvidia.com/gpu"
    accelerators_per_node: int = 8
    boot_delay_s: float = 2.0

    @classmethod
    def eks(cls, nodegroup: str, **kwargs: Any) -> SimulatedNodeGroup:
        return cls(name=nodegroup, labels={EKS_NODEGROUP_LABEL: nodegroup}, **kwargs)

    @classmethod
    def gke(cls, node_pool: str, **kwargs: Any) -> SimulatedNodeGroup:
        return cls(name=node_pool, labels={GKE_NODEPOOL_LABEL: node_pool}, **kwargs)


@dataclass
class NodeSimulator:
    """Keeps the Nodes of one group in line with the cloud's desired size."""

    api: client.ApiClient
    group: SimulatedNodeGroup
    desired_size: DesiredSize
    clock: Callable[[], float] = time.monotonic
    ready: bool = True
    accelerators_lost: bool = False
    _created_at: dict[str, float] = field(default_factory=dict)
    _written: dict[str, tuple[bool, int]] = field(default_factory=dict)
    _serial: int = 0

    def set_ready(self, ready: bool) -> None:
        """Make every node of the group Ready again, or NotReady (a zonal outage)."""
        self.ready = ready

    def lose_accelerators(self, lost: bool = True) -> None:
        """Zero (or restore) the allocatable accelerators of every node (a driver crash)."""
        self.accelerators_lost = lost

    def _selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.group.labels.items())

    async def _existing(self) -> list[client.V1Node]:
        core = client.CoreV1Api(self.api)
        nodes = await core.list_node(label_selector=self._selector())
        return sorted(nodes.items, key=lambda node: node.metadata.name)

    async def reconcile_once(self) -> int:
        """Create, delete and update Nodes once; return how many are Ready now."""
        core = client.CoreV1Api(self.api)
        desired = max(0, await self.desired_size())
        existing = await self._existing()
        for node in existing[desired:]:
            with contextlib.suppress(ApiException):
                await core.delete_node(node.metadata.name)
            self._created_at.pop(node.metadata.name, None)
            self._written.pop(node.metadata.name, None)
        existing = existing[:desired]
        for _ in range(desired - len(existing)):
            existing.append(await self._create(core))
        ready_count = 0
        now = self.clock()
        for node in existing:
            booted = now - self._created_at.setdefault(node.metadata.name, now)
            is_ready = self.ready and booted >= self.group.boot_delay_s
            ready_count += int(is_ready)
            await self._write_status(core, node.metadata.name, ready=is_ready)
        return ready_count

    async def _create(self, core: client.CoreV1Api) -> client.V1Node:
        self._serial += 1
        name = f"{self.group.name}-{self._serial:04d}-{int(self.clock() * 1000) % 100000:05d}"
        body = client.V1Node(
            metadata=client.V1ObjectMeta(
                name=name, labels={**self.group.labels, SIMULATED_LABEL: "true"}
            ),
            spec=client.V1NodeSpec(),
        )
        created = await core.create_node(body)
        self._created_at[name] = self.clock()
        return created

    async def _write_status(self, core: client.CoreV1Api, name: str, *, ready: bool) -> None:
        accelerators = 0 if self.accelerators_lost else self.group.accelerators_per_node
        if self._written.get(name) == (ready, accelerators):
            return  # a real kubelet heartbeats through Leases, not by rewriting status
        resources = {
            "cpu": "96",
            "memory": "1024Gi",
            "pods": "110",
            self.group.accelerator_resource: str(accelerators),
        }
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                    "message": "simulated node" if ready else "simulated node is not ready",
                    "lastHeartbeatTime": _rfc3339(time.time()),
                    "lastTransitionTime": _rfc3339(time.time()),
                }
            ],
        }
        with contextlib.suppress(ApiException):
            await core.patch_node_status(name, {"status": status})
            self._written[name] = (ready, accelerators)

    async def run(self, *, period_s: float = 0.5, stop: asyncio.Event | None = None) -> None:
        """Reconcile every ``period_s`` until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            with contextlib.suppress(ApiException, OSError):
                await self.reconcile_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period_s)


def _rfc3339(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))
