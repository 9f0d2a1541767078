"""A small stand-in for Cluster API's MachineDeployment/Machine controllers, on a real apiserver.

It does what the real controllers visibly do to the objects crossfade reads: creates Machines
(labelled ``cluster.x-k8s.io/deployment-name``) until their count matches ``spec.replicas``,
deletes the newest extra ones, walks each Machine from ``Provisioning`` to ``Running`` after
``provision_delay_s`` (on an injected clock), and writes the MachineDeployment's status
(``replicas``, ``readyReplicas``, ``availableReplicas``, ``selector``, ``phase``, conditions)
through the status subresource. ``reconcile_all`` does this for every MachineDeployment in the
namespace (those crossfade creates have names the test only learns afterwards) and, standing
in for the garbage collector the test apiserver lacks, deletes Machines whose MachineDeployment
is gone. Knobs reproduce the failures infrastructure providers report:
``insufficient_capacity`` (new Machines fail with CAPA's InsufficientInstanceCapacity),
``insufficient_capacity_templates`` (the same, only for Machines whose ``infrastructureRef``
names one of these infrastructure templates: one instance type is out of capacity, the next
is not) and ``stuck_provisioning`` (new Machines never leave ``Provisioning``).
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client

GROUP = "cluster.x-k8s.io"
VERSION = "v1beta2"
API_VERSION = f"{GROUP}/{VERSION}"
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
AUTOSCALER_MIN_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
AUTOSCALER_MAX_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
MERGE_PATCH = "application/merge-patch+json"
# The generated client picks JSON-patch for list bodies only; say merge-patch explicitly.
MERGE_PATCH_OPTIONS: dict[str, Any] = {"_content_type": MERGE_PATCH}
ICE_REASON = "CreateError"
ICE_MESSAGE = (
    "failed to create AWSMachine: InsufficientInstanceCapacity: We currently do not have "
    "sufficient p5.48xlarge capacity in the Availability Zone you requested (us-east-1a)."
)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now_rfc3339(),
    }


def machine_deployment(
    *,
    name: str,
    cluster_name: str,
    replicas: int,
    min_size: int | None = None,
    max_size: int | None = None,
) -> dict[str, Any]:
    """Return a valid v1beta2 MachineDeployment manifest (Docker infrastructure, no bootstrap)."""
    annotations = {}
    if min_size is not None:
        annotations[AUTOSCALER_MIN_ANNOTATION] = str(min_size)
    if max_size is not None:
        annotations[AUTOSCALER_MAX_ANNOTATION] = str(max_size)
    labels = {DEPLOYMENT_NAME_LABEL: name, CLUSTER_NAME_LABEL: cluster_name}
    return {
        "apiVersion": API_VERSION,
        "kind": "MachineDeployment",
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "spec": {
            "clusterName": cluster_name,
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "clusterName": cluster_name,
                    "bootstrap": {"dataSecretName": f"{name}-bootstrap"},
                    "infrastructureRef": {
                        "apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "DockerMachineTemplate",
                        "name": name,
                    },
                },
            },
        },
    }


@dataclass
class CapiTestController:
    """Drive Machines and MachineDeployment status in one namespace, one pass at a time."""

    api: client.ApiClient
    namespace: str
    clock: Callable[[], float] = time.monotonic
    provision_delay_s: float = 0.0
    insufficient_capacity: bool = False
    insufficient_capacity_templates: set[str] = field(default_factory=set)
    stuck_provisioning: bool = False
    _born_at: dict[str, float] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    async def _machines(self, deployment: str) -> list[dict[str, Any]]:
        listed = await self._custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            "machines",
            label_selector=f"{DEPLOYMENT_NAME_LABEL}={deployment}",
        )
        items: list[dict[str, Any]] = listed["items"]
        return sorted(items, key=lambda m: m["metadata"]["name"])

    async def _create_machine(self, deployment: dict[str, Any]) -> None:
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        machine_name = f"{name}-{next(self._serial):04d}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "Machine",
            "metadata": {
                "name": machine_name,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "MachineDeployment",
                        "name": name,
                        "uid": deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": dict(template["spec"]),
        }
        await self._custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "machines", body
        )
        self._born_at[machine_name] = self.clock()
        status: dict[str, Any] = {
            "phase": "Provisioning",
            "conditions": [_condition("InfrastructureReady", False, "Provisioning")],
        }
        infrastructure = str(template["spec"].get("infrastructureRef", {}).get("name", ""))
        if self.insufficient_capacity or infrastructure in self.insufficient_capacity_templates:
            status = {
                "phase": "Failed",
                "conditions": [
                    _condition("InfrastructureReady", False, "InstanceProvisionFailed", ICE_MESSAGE)
                ],
                "deprecated": {
                    "v1beta1": {"failureReason": ICE_REASON, "failureMessage": ICE_MESSAGE}
                },
            }
            self._born_at.pop(machine_name)
        elif self.stuck_provisioning:
            self._born_at.pop(machine_name)
        await self._patch_status("machines", machine_name, status)

    async def _patch_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        await self._custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            self.namespace,
            plural,
            name,
            {"status": status},
            **MERGE_PATCH_OPTIONS,
        )

    async def _advance(self, machine: dict[str, Any]) -> bool:
        """Move a Provisioning Machine to Running once its delay passed; return its readiness."""
        name = machine["metadata"]["name"]
        phase = (machine.get("status") or {}).get("phase")
        if phase == "Running":
            return True
        born = self._born_at.get(name)
        if phase != "Provisioning" or born is None or self.clock() - born < self.provision_delay_s:
            return False
        await self._patch_status(
            "machines",
            name,
            {
                "phase": "Running",
                "nodeRef": {"name": f"node-{name}"},
                "conditions": [
                    _condition("InfrastructureReady", True, "Ready"),
                    _condition("NodeReady", True, "NodeReady"),
                    _condition("Ready", True, "Ready"),
                    _condition("Available", True, "Available"),
                ],
            },
        )
        return True

    async def reconcile(self, deployment_name: str) -> None:
        """Bring one MachineDeployment's Machines and status one step closer to its spec."""
        deployment = await self._custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "machinedeployments", deployment_name
        )
        desired = int(deployment["spec"].get("replicas", 0))
        machines = await self._machines(deployment_name)
        for extra in machines[desired:][::-1]:
            await self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "machines", extra["metadata"]["name"]
            )
        for _ in range(desired - len(machines)):
            await self._create_machine(deployment)
        machines = await self._machines(deployment_name)
        ready = sum([await self._advance(machine) for machine in machines])
        failed = sum(1 for m in machines if (m.get("status") or {}).get("phase") == "Failed")
        if len(machines) < desired or ready < desired:
            phase = "ScalingUp"
        elif len(machines) > desired:
            phase = "ScalingDown"
        else:
            phase = "Running"
        selector = ",".join(
            f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
        )
        available = ready >= desired
        await self._patch_status(
            "machinedeployments",
            deployment_name,
            {
                "replicas": len(machines),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "upToDateReplicas": len(machines),
                "selector": selector,
                "phase": "Failed" if failed and not available else phase,
                "observedGeneration": deployment["metadata"]["generation"],
                "conditions": [
                    _condition(
                        "Available",
                        available,
                        "Available" if available else "NotAvailable",
                        "" if available else f"{ready} of {desired} Machines ready",
                    )
                ],
            },
        )

    async def reconcile_all(self) -> list[str]:
        """Reconcile every MachineDeployment in the namespace; return their names.

        Machines whose MachineDeployment no longer exists are deleted first, as the garbage
        collector does through their controller ownerReference in a real cluster.
        """
        listed = await self._custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "machinedeployments"
        )
        names = sorted(item["metadata"]["name"] for item in listed["items"])
        machines = await self._custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "machines"
        )
        for machine in machines["items"]:
            owner = machine["metadata"].get("labels", {}).get(DEPLOYMENT_NAME_LABEL)
            if owner is not None and owner not in names:
                await self._custom.delete_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "machines", machine["metadata"]["name"]
                )
        for name in names:
            await self.reconcile(name)
        return names
