"""Cluster API provider: a MachineDeployment (cluster.x-k8s.io/v1beta2) scaled through ``/scale``.

The MachineDeployment lives in a Cluster API management cluster that crossfade reaches with a
kubeconfig Secret (``providers.kubeconfig``). Sizes come from ``spec.replicas`` and
``status.readyReplicas``; bounds from the cluster-autoscaler annotations Cluster API already
defines (``...-node-group-min-size`` / ``-max-size``). Failing Machines become health issues:
a ``failureReason`` (v1beta1, kept under ``status.deprecated.v1beta1``), the ``Failed`` phase,
an infrastructure condition whose message names a capacity shortage, or a Machine stuck in
``Pending``/``Provisioning`` past ``provisioning_timeout_s``.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client

from crossfade.providers.base import HealthIssue, NodeGroupState, ScaleResult
from crossfade.providers.errors import InvalidRequest
from crossfade.providers.kubeconfig import (
    KUBECONFIG_SECRET_KEY,
    ApiClientSource,
    SecretKubeconfigClient,
    as_source,
    close_source,
    kube_call,
)
from crossfade.providers.registry import placement_member

if TYPE_CHECKING:
    from crossfade.providers.registry import ProviderContext

PROVIDER_TYPE = "ClusterAPI"
PLACEMENT_MEMBER = "clusterAPI"
GROUP = "cluster.x-k8s.io"
VERSION = "v1beta2"
MACHINE_DEPLOYMENTS = "machinedeployments"
MACHINES = "machines"
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
AUTOSCALER_MIN_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"
AUTOSCALER_MAX_ANNOTATION = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"
DEFAULT_MAX_REPLICAS = 1000
PROVISIONING_TIMEOUT_S = 900.0
MERGE_PATCH = "application/merge-patch+json"
# The generated client picks JSON-patch for list bodies only; say merge-patch explicitly.
MERGE_PATCH_OPTIONS: dict[str, Any] = {"_content_type": MERGE_PATCH}
SCALING_PHASES = frozenset({"ScalingUp", "ScalingDown"})
PROVISIONING_PHASES = frozenset({"Pending", "Provisioning"})
# What infrastructure providers write when the cloud behind them has no capacity: CAPA
# (InsufficientInstanceCapacity), CAPG (ZONE_RESOURCE_POOL_EXHAUSTED), CAPZ (SkuNotAvailable,
# AllocationFailed), and the generic wording several use.
INSUFFICIENT_CAPACITY_MARKERS = (
    "InsufficientInstanceCapacity",
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "SkuNotAvailable",
    "AllocationFailed",
    "InsufficientCapacity",
    "insufficient capacity",
)


@dataclass(frozen=True)
class MachineDeploymentRef:
    """Where a MachineDeployment lives in its Cluster API management cluster."""

    namespace: str
    name: str


def is_insufficient_capacity_message(message: str) -> bool:
    """Return True when an infrastructure provider's message reports a capacity shortage."""
    return any(marker in message for marker in INSUFFICIENT_CAPACITY_MARKERS)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.timestamp()


def _int_annotation(annotations: Mapping[str, str], key: str, default: int) -> int:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"annotation {key}={raw!r} is not an integer") from None


def machine_issues(
    machines: Sequence[Mapping[str, Any]], *, now: float, provisioning_timeout_s: float
) -> tuple[HealthIssue, ...]:
    """Return the health issues a MachineDeployment's Machines show at ``now``."""
    issues: list[HealthIssue] = []
    for machine in machines:
        name = machine["metadata"]["name"]
        status = machine.get("status") or {}
        legacy = (status.get("deprecated") or {}).get("v1beta1") or {}
        reason, message = legacy.get("failureReason"), legacy.get("failureMessage") or ""
        phase = status.get("phase", "")
        infra_message = ""
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "InfrastructureReady"
                and condition.get("status") == "False"
            ):
                infra_message = f"{condition.get('reason', '')}: {condition.get('message', '')}"
        if reason or phase == "Failed":
            text = message or infra_message or f"Machine {name} failed"
            issues.append(
                HealthIssue(
                    code=reason or "MachineFailed",
                    message=text,
                    insufficient_capacity=is_insufficient_capacity_message(text),
                    resource_ids=(name,),
                )
            )
            continue
        if infra_message and is_insufficient_capacity_message(infra_message):
            issues.append(
                HealthIssue(
                    code="InsufficientCapacity",
                    message=infra_message,
                    insufficient_capacity=True,
                    resource_ids=(name,),
                )
            )
            continue
        created = _parse_time(machine["metadata"].get("creationTimestamp"))
        if phase in PROVISIONING_PHASES and created is not None:
            waited_s = now - created
            if waited_s > provisioning_timeout_s:
                issues.append(
                    HealthIssue(
                        code="MachineProvisioningTimeout",
                        message=(
                            f"Machine {name} has been {phase} for {int(waited_s)} s "
                            f"(limit {int(provisioning_timeout_s)} s)"
                        ),
                        resource_ids=(name,),
                    )
                )
    return tuple(issues)


class ClusterAPIProvider:
    """``CapacityProvider`` for one Cluster API MachineDeployment."""

    def __init__(
        self,
        *,
        ref: MachineDeploymentRef,
        api: client.ApiClient | ApiClientSource,
        provisioning_timeout_s: float = PROVISIONING_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ref = ref
        self._api = as_source(api)
        self._provisioning_timeout_s = provisioning_timeout_s
        self._clock = clock

    async def aclose(self) -> None:
        """Close the client this provider built from a kubeconfig Secret (none otherwise)."""
        await close_source(self._api)

    @property
    def name(self) -> str:
        return f"capi/{self.ref.namespace}/{self.ref.name}"

    async def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(await self._api())

    async def _get(self) -> dict[str, Any]:
        found: dict[str, Any] = await kube_call(
            f"get MachineDeployment {self.name}",
            (await self._custom()).get_namespaced_custom_object(
                GROUP, VERSION, self.ref.namespace, MACHINE_DEPLOYMENTS, self.ref.name
            ),
        )
        return found

    async def _machines(self) -> list[dict[str, Any]]:
        listed = await kube_call(
            f"list Machines of {self.name}",
            (await self._custom()).list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.ref.namespace,
                MACHINES,
                label_selector=f"{DEPLOYMENT_NAME_LABEL}={self.ref.name}",
            ),
        )
        items: list[dict[str, Any]] = listed.get("items", [])
        return items

    @staticmethod
    def _bounds(deployment: Mapping[str, Any]) -> tuple[int, int]:
        annotations = deployment["metadata"].get("annotations") or {}
        return (
            _int_annotation(annotations, AUTOSCALER_MIN_ANNOTATION, 0),
            _int_annotation(annotations, AUTOSCALER_MAX_ANNOTATION, DEFAULT_MAX_REPLICAS),
        )

    async def describe(self) -> NodeGroupState:
        deployment = await self._get()
        machines = await self._machines()
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        desired = int(spec.get("replicas", 0))
        min_size, max_size = self._bounds(deployment)
        phase = status.get("phase") or "Unknown"
        generation = deployment["metadata"].get("generation", 0)
        updating = (
            phase in SCALING_PHASES
            or int(status.get("replicas", 0)) != desired
            or int(status.get("observedGeneration", 0)) < generation
        )
        return NodeGroupState(
            desired=desired,
            min_size=min_size,
            max_size=max_size,
            ready=int(status.get("readyReplicas", 0)),
            status=phase,
            updating=updating,
            health_issues=machine_issues(
                machines, now=self._clock(), provisioning_timeout_s=self._provisioning_timeout_s
            ),
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        deployment = await self._get()
        min_size, max_size = self._bounds(deployment)
        if not min_size <= desired <= max_size:
            raise InvalidRequest(
                f"{self.name}: desired {desired} outside {min_size}..{max_size}",
                code="OutOfBounds",
            )
        previous = int((deployment.get("spec") or {}).get("replicas", 0))
        if previous == desired:
            return ScaleResult(desired=desired, changed=False, previous=previous, token=token)
        # An absolute replica count through the scale subresource: replaying the same
        # request (same token after a lost reply) sets the same value again, harmlessly.
        await kube_call(
            f"scale {self.name}",
            (await self._custom()).patch_namespaced_custom_object_scale(
                GROUP,
                VERSION,
                self.ref.namespace,
                MACHINE_DEPLOYMENTS,
                self.ref.name,
                {"spec": {"replicas": desired}},
                **MERGE_PATCH_OPTIONS,
            ),
        )
        return ScaleResult(
            desired=desired,
            changed=True,
            in_progress=True,
            previous=previous,
            token=token,
            writes=1,
        )


def kubeconfig_client(
    placement: Mapping[str, Any], context: ProviderContext
) -> SecretKubeconfigClient:
    """Return the client source of a ``ClusterAPI`` placement's kubeconfig Secret (lazy)."""
    member = placement_member(placement, PLACEMENT_MEMBER)
    secret = member.get("kubeconfigSecretRef") or {}
    if not secret.get("name"):
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks "
            "kubeconfigSecretRef.name"
        )
    return SecretKubeconfigClient(
        management=context.management_client(),
        namespace=context.namespace,
        name=str(secret["name"]),
        key=str(secret.get("key") or KUBECONFIG_SECRET_KEY),
    )


def build(placement: Mapping[str, Any], context: ProviderContext) -> ClusterAPIProvider:
    """Registry factory: the provider of one ``ClusterAPI`` placement (wire form).

    The kubeconfig Secret is read from the pool's namespace on first use.
    """
    member = placement_member(placement, PLACEMENT_MEMBER)
    try:
        ref = MachineDeploymentRef(
            namespace=str(member["namespace"]), name=str(member["machineDeployment"])
        )
    except KeyError as missing:
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks {missing}"
        ) from None
    return ClusterAPIProvider(
        ref=ref, api=kubeconfig_client(placement, context), clock=context.clock
    )
