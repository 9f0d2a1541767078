"""A small stand-in for Karpenter's provisioner and NodeClaim lifecycle, on a real apiserver.

Per pass it does what Karpenter visibly does to the objects crossfade reads: for a static
NodePool it keeps ``spec.replicas`` NodeClaims; for a dynamic one it launches claims for the
pending demand (``demand_nodes``) up to the NodePool's accelerator limit. New claims walk
through ``Launched``, ``Registered`` and ``Initialized`` (with allocatable accelerators), and
the NodePool's status (``nodes``, ``resources``, ``Ready``) follows. Failure knobs:
``insufficient_capacity`` makes launches fail the way Karpenter reports an ICE (an
``InsufficientCapacityError`` Event, then the claim is deleted); ``launch_error`` leaves
claims with ``Launched=False``.
"""

from __future__ import annotations

import datetime
import itertools
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes_asyncio import client

GROUP = "karpenter.sh"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
NODE_POOL_LABEL = "karpenter.sh/nodepool"
MERGE_PATCH_OPTIONS: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
EVENTS_NAMESPACE = "default"
ICE_EVENT_REASON = "InsufficientCapacityError"
ICE_ERROR = (
    "creating instance, insufficient capacity, all requested instance types were unavailable "
    "during launch"
)
LAUNCH_ERROR = "creating instance, UnauthorizedOperation: not authorized to perform ec2:CreateFleet"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _condition(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def node_pool(
    *,
    name: str,
    replicas: int | None = None,
    limits: dict[str, str] | None = None,
    instance_type: str = "p5.48xlarge",
) -> dict[str, Any]:
    """Return a valid karpenter.sh/v1 NodePool manifest (static when ``replicas`` is given)."""
    spec: dict[str, Any] = {
        "template": {
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.k8s.aws",
                    "kind": "EC2NodeClass",
                    "name": "gpu",
                },
                "requirements": [
                    {
                        "key": "node.kubernetes.io/instance-type",
                        "operator": "In",
                        "values": [instance_type],
                    }
                ],
            }
        }
    }
    if replicas is not None:
        spec["replicas"] = replicas
    if limits:
        spec["limits"] = limits
    return {"apiVersion": API_VERSION, "kind": "NodePool", "metadata": {"name": name}, "spec": spec}


@dataclass
class KarpenterTestController:
    """Drive NodeClaims and NodePool status for NodePools in one cluster, one pass at a time."""

    api: client.ApiClient
    accelerator_resource: str = "nvidia.com/gpu"
    accelerators_per_node: int = 8
    demand_nodes: int = 0
    insufficient_capacity: bool = False
    launch_error: bool = False
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def _target(self, pool: dict[str, Any]) -> int:
        spec = pool["spec"]
        if "replicas" in spec:
            return int(spec["replicas"])
        limit = (spec.get("limits") or {}).get(self.accelerator_resource)
        if limit is None:
            return self.demand_nodes
        return min(self.demand_nodes, math.floor(Decimal(str(limit)) / self.accelerators_per_node))

    async def _claims(self, pool_name: str) -> list[dict[str, Any]]:
        listed = await self._custom.list_cluster_custom_object(
            GROUP, VERSION, "nodeclaims", label_selector=f"{NODE_POOL_LABEL}={pool_name}"
        )
        items: list[dict[str, Any]] = listed["items"]
        return sorted(items, key=lambda claim: claim["metadata"]["name"])

    async def _launch(self, pool: dict[str, Any]) -> None:
        pool_name = pool["metadata"]["name"]
        claim_name = f"{pool_name}-{next(self._serial):05d}"
        template = pool["spec"]["template"]["spec"]
        await self._custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "nodeclaims",
            {
                "apiVersion": API_VERSION,
                "kind": "NodeClaim",
                "metadata": {
                    "name": claim_name,
                    "labels": {NODE_POOL_LABEL: pool_name},
                    "ownerReferences": [
                        {
                            "apiVersion": API_VERSION,
                            "kind": "NodePool",
                            "name": pool_name,
                            "uid": pool["metadata"]["uid"],
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "nodeClassRef": template["nodeClassRef"],
                    "requirements": template["requirements"],
                },
            },
        )
        if self.insufficient_capacity:
            await self._record_ice(claim_name)
            await self._custom.delete_cluster_custom_object(
                GROUP, VERSION, "nodeclaims", claim_name
            )
            return
        if self.launch_error:
            conditions = [_condition("Launched", False, "LaunchFailed", LAUNCH_ERROR)]
            await self._patch_claim(claim_name, {"conditions": conditions})
            return
        gpus = str(self.accelerators_per_node)
        await self._patch_claim(
            claim_name,
            {
                "providerID": f"aws:///us-east-1a/i-{next(self._serial):017x}",
                "nodeName": f"ip-10-0-0-{next(self._serial) % 250}.ec2.internal",
                "capacity": {self.accelerator_resource: gpus},
                "allocatable": {self.accelerator_resource: gpus},
                "conditions": [
                    _condition("Launched", True, "Launched"),
                    _condition("Registered", True, "Registered"),
                    _condition("Initialized", True, "Initialized"),
                    _condition("Ready", True, "Ready"),
                ],
            },
        )

    async def _patch_claim(self, name: str, status: dict[str, Any]) -> None:
        await self._custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "nodeclaims", name, {"status": status}, **MERGE_PATCH_OPTIONS
        )

    async def _record_ice(self, claim_name: str) -> None:
        """Record the Event Karpenter publishes before deleting a claim the cloud refused."""
        now = _now()
        await client.CoreV1Api(self.api).create_namespaced_event(
            EVENTS_NAMESPACE,
            client.CoreV1Event(
                metadata=client.V1ObjectMeta(name=f"{claim_name}.{next(self._serial):x}"),
                involved_object=client.V1ObjectReference(
                    api_version=API_VERSION, kind="NodeClaim", name=claim_name
                ),
                reason=ICE_EVENT_REASON,
                message=f"NodeClaim {claim_name} event: {ICE_ERROR}",
                type="Warning",
                first_timestamp=now,
                last_timestamp=now,
                count=1,
                source=client.V1EventSource(component="karpenter"),
            ),
        )

    async def reconcile(self, pool_name: str) -> None:
        """Bring one NodePool's claims and status one step closer to its target."""
        pool = await self._custom.get_cluster_custom_object(GROUP, VERSION, "nodepools", pool_name)
        target = self._target(pool)
        claims = await self._claims(pool_name)
        for extra in claims[target:][::-1]:
            await self._custom.delete_cluster_custom_object(
                GROUP, VERSION, "nodeclaims", extra["metadata"]["name"]
            )
        for _ in range(target - len(claims)):
            await self._launch(pool)
        claims = await self._claims(pool_name)
        await self._custom.patch_cluster_custom_object_status(
            GROUP,
            VERSION,
            "nodepools",
            pool_name,
            {
                "status": {
                    "nodes": len(claims),
                    "resources": {
                        self.accelerator_resource: str(len(claims) * self.accelerators_per_node),
                        "nodes": str(len(claims)),
                    },
                    "conditions": [_condition("Ready", True, "Ready")],
                }
            },
            **MERGE_PATCH_OPTIONS,
        )
