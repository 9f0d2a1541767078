"""Karpenter provider: a NodePool (karpenter.sh/v1) sized by ``spec.replicas`` or its limits.

Two modes, chosen by the NodePool itself:

- Static NodePools (``spec.replicas`` set): Karpenter keeps exactly that many nodes; crossfade
  scales through the ``/scale`` subresource, bounded by ``spec.limits.nodes``.
- Dynamic NodePools: Karpenter launches nodes for pending pods, so crossfade sets the ceiling,
  ``spec.limits[<accelerator>] = desired x accelerators per node``; standby warmth then comes
  from the workload's own replicas. ``desired`` reads that limit back.

Readiness comes from the NodeClaims the NodePool owns (label ``karpenter.sh/nodepool``): a
claim counts as ready once ``Initialized`` is True. Launch failures show as health issues:
a ``Launched=False`` condition, or the ``InsufficientCapacityError`` Events Karpenter emits
when it deletes a claim the cloud had no capacity for.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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

PROVIDER_TYPE = "KarpenterNodePool"
PLACEMENT_MEMBER = "karpenterNodePool"
GROUP = "karpenter.sh"
VERSION = "v1"
NODE_POOLS = "nodepools"
NODE_CLAIMS = "nodeclaims"
NODE_POOL_LABEL = "karpenter.sh/nodepool"
NODES_LIMIT = "nodes"
DEFAULT_ACCELERATOR_RESOURCE = "nvidia.com/gpu"
DEFAULT_MAX_NODES = 1000
ICE_EVENT_REASON = "InsufficientCapacityError"
ICE_EVENT_WINDOW_S = 300.0
# Events about cluster-scoped objects such as NodeClaims are recorded in this namespace.
CLUSTER_SCOPED_EVENTS_NAMESPACE = "default"
MERGE_PATCH = "application/merge-patch+json"
MERGE_PATCH_OPTIONS: dict[str, Any] = {"_content_type": MERGE_PATCH}
INSUFFICIENT_CAPACITY_MARKERS = ("InsufficientCapacity", "insufficient capacity")
QUANTITY_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


@dataclass(frozen=True)
class KarpenterNodePoolRef:
    """A (cluster-scoped) NodePool and the accelerator resource its nodes carry."""

    name: str
    accelerator_resource: str = DEFAULT_ACCELERATOR_RESOURCE
    accelerators_per_node: int = 8


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes resource quantity such as ``16``, ``1k`` or ``500m``."""
    text = str(value).strip()
    for suffix in sorted(QUANTITY_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, multiplier = text[: -len(suffix)], QUANTITY_SUFFIXES[suffix]
            break
    else:
        number, multiplier = text, Decimal(1)
    try:
        return Decimal(number) * multiplier
    except InvalidOperation:
        raise InvalidRequest(f"{value!r} is not a Kubernetes quantity") from None


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            found: Mapping[str, Any] = condition
            return found
    return None


def _is_true(obj: Mapping[str, Any], kind: str) -> bool:
    condition = _condition(obj, kind)
    return condition is not None and condition.get("status") == "True"


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def is_insufficient_capacity_message(message: str) -> bool:
    """Return True when Karpenter's message says the cloud had no capacity."""
    return any(marker in message for marker in INSUFFICIENT_CAPACITY_MARKERS)


def claim_issues(claims: Sequence[Mapping[str, Any]]) -> list[HealthIssue]:
    """Return health issues of NodeClaims whose launch failed."""
    issues = []
    for claim in claims:
        launched = _condition(claim, "Launched")
        if launched is None or launched.get("status") != "False":
            continue
        text = f"{launched.get('reason', '')}: {launched.get('message', '')}"
        issues.append(
            HealthIssue(
                code=str(launched.get("reason") or "LaunchFailed"),
                message=text,
                insufficient_capacity=is_insufficient_capacity_message(text),
                resource_ids=(claim["metadata"]["name"],),
            )
        )
    return issues


def is_claim_of(claim_name: str, pool: str) -> bool:
    """Return True when ``claim_name`` is ``<pool>-<suffix>``, the name Karpenter generates.

    The suffix has no dash, so claims of a pool ``gpu-a`` never count for a pool ``gpu``.
    """
    prefix = f"{pool}-"
    suffix = claim_name[len(prefix) :]
    return claim_name.startswith(prefix) and bool(suffix) and "-" not in suffix


def ice_event_issues(
    events: Sequence[Any], *, pool: str, now: float, window_s: float
) -> list[HealthIssue]:
    """Return ICE issues from recent ``InsufficientCapacityError`` Events of the pool's claims."""
    issues = []
    for event in events:
        involved = event.involved_object
        if involved is None or not is_claim_of(str(involved.name or ""), pool):
            continue
        when = event.last_timestamp or event.event_time or event.metadata.creation_timestamp
        at = when.timestamp() if when is not None else None
        if at is None or now - at > window_s:
            continue
        issues.append(
            HealthIssue(
                code=ICE_EVENT_REASON,
                message=str(event.message or ""),
                insufficient_capacity=True,
                resource_ids=(str(involved.name),),
            )
        )
    return issues


class KarpenterNodePoolProvider:
    """``CapacityProvider`` for one Karpenter NodePool."""

    def __init__(
        self,
        *,
        ref: KarpenterNodePoolRef,
        api: client.ApiClient | ApiClientSource,
        max_nodes: int = DEFAULT_MAX_NODES,
        ice_event_window_s: float = ICE_EVENT_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ref = ref
        self._api = as_source(api)
        self._max_nodes = max_nodes
        self._ice_event_window_s = ice_event_window_s
        self._clock = clock

    async def aclose(self) -> None:
        """Close the client this provider built from a kubeconfig Secret (none otherwise)."""
        await close_source(self._api)

    @property
    def name(self) -> str:
        return f"karpenter/{self.ref.name}"

    async def _guard(self, what: str, call: Awaitable[Any]) -> Any:
        return await kube_call(f"{what} of {self.name}", call)

    async def _get(self, custom: client.CustomObjectsApi) -> dict[str, Any]:
        pool: dict[str, Any] = await self._guard(
            "get NodePool",
            custom.get_cluster_custom_object(GROUP, VERSION, NODE_POOLS, self.ref.name),
        )
        return pool

    def _sizes(self, pool: Mapping[str, Any]) -> tuple[int, int]:
        """Return (desired, max) in nodes for a static or a dynamic NodePool."""
        spec = pool.get("spec") or {}
        limits = spec.get("limits") or {}
        if "replicas" in spec:
            maximum = self._max_nodes
            if NODES_LIMIT in limits:
                maximum = int(parse_quantity(limits[NODES_LIMIT]))
            return int(spec["replicas"]), maximum
        limit = limits.get(self.ref.accelerator_resource)
        if limit is None:
            return self._max_nodes, self._max_nodes
        nodes = parse_quantity(limit) / self.ref.accelerators_per_node
        return math.floor(nodes), self._max_nodes

    async def describe(self) -> NodeGroupState:
        api = await self._api()
        custom = client.CustomObjectsApi(api)
        pool = await self._get(custom)
        listed = await self._guard(
            "list NodeClaims",
            custom.list_cluster_custom_object(
                GROUP, VERSION, NODE_CLAIMS, label_selector=f"{NODE_POOL_LABEL}={self.ref.name}"
            ),
        )
        claims = [c for c in listed.get("items", []) if not c["metadata"].get("deletionTimestamp")]
        events = await self._guard(
            "list Events",
            client.CoreV1Api(api).list_namespaced_event(
                CLUSTER_SCOPED_EVENTS_NAMESPACE,
                field_selector=f"involvedObject.kind=NodeClaim,reason={ICE_EVENT_REASON}",
            ),
        )
        desired, maximum = self._sizes(pool)
        ready = sum(1 for claim in claims if _is_true(claim, "Initialized"))
        issues = claim_issues(claims) + ice_event_issues(
            events.items, pool=self.ref.name, now=self._clock(), window_s=self._ice_event_window_s
        )
        pool_ready = _condition(pool, "Ready")
        static = "replicas" in (pool.get("spec") or {})
        updating = ready < len(claims) or (static and len(claims) != desired)
        return NodeGroupState(
            desired=desired,
            min_size=0,
            max_size=maximum,
            ready=ready,
            status="Unknown"
            if pool_ready is None
            else ("Ready" if pool_ready.get("status") == "True" else "NotReady"),
            updating=updating,
            health_issues=tuple(issues),
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        custom = client.CustomObjectsApi(await self._api())
        pool = await self._get(custom)
        previous, maximum = self._sizes(pool)
        if not 0 <= desired <= maximum:
            raise InvalidRequest(f"{self.name}: desired {desired} outside 0..{maximum}")
        if previous == desired:
            return ScaleResult(desired=desired, changed=False, previous=previous, token=token)
        if "replicas" in (pool.get("spec") or {}):
            call = custom.patch_cluster_custom_object_scale(
                GROUP,
                VERSION,
                NODE_POOLS,
                self.ref.name,
                {"spec": {"replicas": desired}},
                **MERGE_PATCH_OPTIONS,
            )
        else:
            # Only this resource's limit is written; other limits (cpu, memory) stay as set.
            limit = str(desired * self.ref.accelerators_per_node)
            call = custom.patch_cluster_custom_object(
                GROUP,
                VERSION,
                NODE_POOLS,
                self.ref.name,
                {"spec": {"limits": {self.ref.accelerator_resource: limit}}},
                **MERGE_PATCH_OPTIONS,
            )
        await self._guard("scale", call)
        return ScaleResult(
            desired=desired,
            changed=True,
            in_progress=True,
            previous=previous,
            token=token,
            writes=1,
        )


def build(placement: Mapping[str, Any], context: ProviderContext) -> KarpenterNodePoolProvider:
    """Registry factory: the provider of one ``KarpenterNodePool`` placement (wire form).

    Without ``kubeconfigSecretRef`` the NodePool is in the operator's own cluster.
    """
    member = placement_member(placement, PLACEMENT_MEMBER)
    accelerator = placement.get("accelerator") or {}
    if "nodePool" not in member:
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} lacks 'nodePool'"
        )
    ref = KarpenterNodePoolRef(
        name=str(member["nodePool"]),
        accelerator_resource=str(accelerator.get("resourceName") or DEFAULT_ACCELERATOR_RESOURCE),
        accelerators_per_node=int(accelerator.get("perNode") or 1),
    )
    secret = member.get("kubeconfigSecretRef")
    api: ApiClientSource = context.management_client()
    if secret:
        api = SecretKubeconfigClient(
            management=api,
            namespace=context.namespace,
            name=str(secret["name"]),
            key=str(secret.get("key") or KUBECONFIG_SECRET_KEY),
        )
    max_nodes = int((placement.get("nodes") or {}).get("max") or DEFAULT_MAX_NODES)
    return KarpenterNodePoolProvider(ref=ref, api=api, max_nodes=max_nodes, clock=context.clock)
