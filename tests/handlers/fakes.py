"""Fakes with knobs for the handler tests: a cloud node group, an endpoint, and the API merge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crossfade.engine.observations import NodeObservation, ProbeOutcome, ProbeResult
from crossfade.handlers.observe import PlacementObservers
from crossfade.providers.base import NodeGroupState, ScaleResult
from crossfade.providers.errors import ProviderError


@dataclass
class FakeNodeGroup:
    """A node group whose nodes are ready as soon as they are asked for."""

    label: str
    desired: int = 1
    min_size: int = 0
    max_size: int = 4
    next_scale_error: ProviderError | None = None
    describe_error: ProviderError | None = None  # raised by every describe while set
    scale_calls: list[tuple[int, str]] = field(default_factory=list)
    tokens_applied: set[str] = field(default_factory=set)
    changes: list[int] = field(default_factory=list)  # sizes actually applied, in order

    @property
    def name(self) -> str:
        return f"fake/{self.label}"

    async def describe(self) -> NodeGroupState:
        if self.describe_error is not None:
            raise self.describe_error
        return NodeGroupState(
            desired=self.desired,
            min_size=self.min_size,
            max_size=self.max_size,
            ready=self.desired,
            status="ACTIVE",
            updating=False,
        )

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        self.scale_calls.append((desired, token))
        if self.next_scale_error is not None:
            error, self.next_scale_error = self.next_scale_error, None
            raise error
        if token in self.tokens_applied or desired == self.desired:
            return ScaleResult(desired=desired, changed=False, token=token)
        previous, self.desired = self.desired, desired
        self.tokens_applied.add(token)
        self.changes.append(desired)
        return ScaleResult(desired=desired, changed=True, previous=previous, token=token, writes=1)


@dataclass
class FakeEndpoint:
    """An inference endpoint whose health a test switches."""

    placement: str
    healthy: bool = True
    clock: list[float] = field(default_factory=lambda: [0.0])

    async def probe(self) -> ProbeResult:
        outcome = ProbeOutcome.HEALTHY if self.healthy else ProbeOutcome.FAILING
        return ProbeResult(
            placement=self.placement, at=self.clock[0], outcome=outcome, latency_ms=5.0
        )


def observers_for(
    endpoint: FakeEndpoint, group: FakeNodeGroup, *, accelerators_per_node: int = 1
) -> PlacementObservers:
    async def nodes() -> NodeObservation:
        return NodeObservation(
            placement=endpoint.placement,
            at=endpoint.clock[0],
            ready_nodes=group.desired,
            total_nodes=group.desired,
            allocatable_accelerators=group.desired * accelerators_per_node,
        )

    async def cloud() -> Any:
        state = await group.describe()
        return state.to_observation(placement=endpoint.placement, at=endpoint.clock[0])

    return PlacementObservers(
        placement=endpoint.placement, probe=endpoint.probe, nodes=nodes, cloud=cloud
    )


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the apiserver applies it."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def pool_body(
    spec: Mapping[str, Any], *, name: str = "chat", generation: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "uid-1",
            "generation": generation,
            "annotations": {},
        },
        "spec": dict(spec),
    }


def fast_spec(*, failback_delay_s: int = 5) -> dict[str, Any]:
    return {
        "placements": [
            {
                "name": "aws",
                "priority": 100,
                "role": "Primary",
                "provider": {"type": "EKSNodeGroup"},
                "nodes": {"min": 1, "max": 2},
                "endpoint": {"url": "http://127.0.0.1:1"},
            },
            {
                "name": "gke",
                "priority": 50,
                "role": "Standby",
                "provider": {"type": "GKENodePool"},
                "nodes": {"min": 0, "max": 2},
                "endpoint": {"url": "http://127.0.0.1:2"},
            },
        ],
        "healthCheck": {
            "inference": {
                "periodSeconds": 1,
                "failureThreshold": 2,
                "successThreshold": 1,
                "initialDelaySeconds": 0,
            }
        },
        "traffic": {"mode": "ActivePassive", "stepPercent": 50},
        "failover": {
            "automatic": True,
            "tolerationSeconds": 0,
            "failbackDelaySeconds": failback_delay_s,
            "warmStandbyNodes": 1,
        },
    }
