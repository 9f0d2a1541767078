"""Hypothesis strategies: valid InferencePool bodies, then up to two edits at rule boundaries."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

PROVIDER_TYPES = ["EKSNodeGroup", "GKENodePool", "ClusterAPI", "KarpenterNodePool"]
MEMBERS: dict[str, tuple[str, dict[str, Any]]] = {
    "EKSNodeGroup": (
        "eksNodeGroup",
        {"region": "us-east-1", "cluster": "c", "nodegroup": "g"},
    ),
    "GKENodePool": (
        "gkeNodePool",
        {"project": "my-project", "location": "us-central1", "cluster": "c", "nodePool": "n"},
    ),
    "ClusterAPI": (
        "clusterAPI",
        {"kubeconfigSecretRef": {"name": "k"}, "namespace": "capi", "machineDeployment": "md"},
    ),
    "KarpenterNodePool": ("karpenterNodePool", {"nodePool": "gpu"}),
}
NAMES = ["aws", "gke", "capi"]
PRIORITIES = [10, 50, 100]

Mutation = Callable[[st.DrawFn, dict[str, Any]], None]


def _provider(provider_type: str) -> dict[str, Any]:
    key, member = MEMBERS[provider_type]
    return {"type": provider_type, key: copy.deepcopy(member)}


@st.composite
def _placement(draw: st.DrawFn, *, name: str, priority: int, primary: bool) -> dict[str, Any]:
    low = draw(st.integers(0, 2))
    out: dict[str, Any] = {
        "name": name,
        "priority": priority,
        "role": "Primary" if primary else "Standby",
        "provider": _provider(draw(st.sampled_from(PROVIDER_TYPES))),
        "nodes": {"min": low, "max": low + draw(st.integers(0, 4)) or 1},
        "backendRef": {"name": f"svc-{name}", "port": 8000},
    }
    if draw(st.booleans()):
        out["endpoint"] = {"url": f"http://127.0.0.1:{18000 + priority}"}
    if draw(st.booleans()):
        out["accelerator"] = {"perNode": draw(st.integers(1, 16))}
    return out


@st.composite
def valid_pools(draw: st.DrawFn) -> dict[str, Any]:
    """A valid pool with 1..3 placements and random (valid) policy."""
    count = draw(st.integers(1, 3))
    priorities = draw(st.permutations(PRIORITIES))
    placements = [
        draw(_placement(name=NAMES[i], priority=priorities[i], primary=i == 0))
        for i in range(count)
    ]
    period = draw(st.integers(1, 10))
    threshold = draw(st.integers(1, 3))
    toleration = draw(st.integers(0, 30))
    window = period * threshold + toleration
    traffic: dict[str, Any] = {
        "mode": draw(st.sampled_from(["ActivePassive", "Weighted", "CapacityProportional"])),
        "stepPercent": draw(st.integers(1, 100)),
    }
    layers = draw(st.sampled_from(["gatewayAPI", "route53", "both"]))
    if layers in {"gatewayAPI", "both"}:
        traffic["gatewayAPI"] = {"httpRouteRef": {"name": "route"}}
    if layers in {"route53", "both"}:
        traffic["route53"] = {
            "hostedZoneId": "Z0123456789ABC",
            "recordName": "llm.example.com",
            "ttlSeconds": draw(st.integers(0, 300)),
            "records": [
                {"placement": p["name"], "values": [f"{p['name']}.example.com"]} for p in placements
            ],
        }
    return {
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "generated"},
        "spec": {
            "placements": placements,
            "healthCheck": {
                "inference": {
                    "periodSeconds": period,
                    "failureThreshold": threshold,
                    "timeoutSeconds": draw(st.integers(1, period * threshold)),
                }
            },
            "traffic": traffic,
            "failover": {
                "tolerationSeconds": toleration,
                "failbackDelaySeconds": window + 1 + draw(st.integers(0, 100)),
            },
        },
    }


def _any_placement(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any]:
    placements: list[dict[str, Any]] = body["spec"]["placements"]
    return placements[draw(st.integers(0, len(placements) - 1))]


def _nodes_edge(draw: st.DrawFn, body: dict[str, Any]) -> None:
    nodes = _any_placement(draw, body)["nodes"]
    nodes["min"] = nodes["max"] + draw(st.integers(-1, 1))


def _priority_collision(draw: st.DrawFn, body: dict[str, Any]) -> None:
    _any_placement(draw, body)["priority"] = draw(st.sampled_from([*PRIORITIES, 1000, 1001]))


def _role_flip(draw: st.DrawFn, body: dict[str, Any]) -> None:
    placement = _any_placement(draw, body)
    placement["role"] = "Standby" if placement["role"] == "Primary" else "Primary"


def _provider_type_change(draw: st.DrawFn, body: dict[str, Any]) -> None:
    _any_placement(draw, body)["provider"]["type"] = draw(st.sampled_from(PROVIDER_TYPES))


def _provider_extra_member(draw: st.DrawFn, body: dict[str, Any]) -> None:
    provider = _any_placement(draw, body)["provider"]
    key, member = MEMBERS[draw(st.sampled_from(PROVIDER_TYPES))]
    provider[key] = copy.deepcopy(member)


def _drop_backend(draw: st.DrawFn, body: dict[str, Any]) -> None:
    placement = _any_placement(draw, body)
    if draw(st.booleans()):
        del placement["backendRef"]
    else:
        placement["backendRef"] = {
            "name": "pool",
            "kind": draw(st.sampled_from(["Service", "InferencePool"])),
        }


def _timeout_edge(draw: st.DrawFn, body: dict[str, Any]) -> None:
    inference = body["spec"]["healthCheck"]["inference"]
    limit = inference["periodSeconds"] * inference["failureThreshold"]
    inference["timeoutSeconds"] = limit + draw(st.integers(0, 1))


def _failback_edge(draw: st.DrawFn, body: dict[str, Any]) -> None:
    spec = body["spec"]
    inference = spec["healthCheck"]["inference"]
    window = (
        inference["periodSeconds"] * inference["failureThreshold"]
        + spec["failover"]["tolerationSeconds"]
    )
    spec["failover"]["failbackDelaySeconds"] = window + draw(st.integers(-1, 1))


def _method_body(draw: st.DrawFn, body: dict[str, Any]) -> None:
    inference = body["spec"]["healthCheck"]["inference"]
    inference["method"] = draw(st.sampled_from(["GET", "POST"]))
    if draw(st.booleans()):
        inference["body"] = '{"prompt":"hi","max_tokens":1}'


def _traffic_layers(draw: st.DrawFn, body: dict[str, Any]) -> None:
    traffic = body["spec"]["traffic"]
    for layer in ("gatewayAPI", "route53"):
        if layer in traffic and draw(st.booleans()):
            del traffic[layer]


def _route53_edge(draw: st.DrawFn, body: dict[str, Any]) -> None:
    route53 = body["spec"]["traffic"].get("route53")
    if route53 is None:
        return
    choice = draw(st.integers(0, 4))
    if choice == 0:
        route53["ttlSeconds"] = draw(st.sampled_from([2_147_483_647, 2_147_483_648, -1]))
    elif choice == 1:
        route53["maxWeight"] = draw(st.sampled_from([0, 1, 255, 256]))
    elif choice == 2:
        route53["records"][0]["placement"] = draw(st.sampled_from([*NAMES, "azure"]))
    elif choice == 3:
        route53["type"] = draw(st.sampled_from(["A", "AAAA", "CNAME"]))
        route53["records"][0]["values"] = draw(
            st.sampled_from([["10.0.0.1"], ["10.0.0.1", "10.0.0.2"], ["h.example.com"]])
        )
    else:
        route53["records"].pop()
        if not route53["records"]:
            del route53["records"]


def _weights(draw: st.DrawFn, body: dict[str, Any]) -> None:
    body["spec"]["traffic"]["mode"] = "Weighted"
    for placement in body["spec"]["placements"]:
        placement["weight"] = draw(st.sampled_from([0, 0, 1, 100, 101]))


def _step(draw: st.DrawFn, body: dict[str, Any]) -> None:
    body["spec"]["traffic"]["stepPercent"] = draw(st.sampled_from([0, 1, 100, 101]))


def _names(draw: st.DrawFn, body: dict[str, Any]) -> None:
    _any_placement(draw, body)["name"] = draw(
        st.sampled_from([*NAMES, "Bad_Name", "a" * 63, "a" * 64, "-x"])
    )


def _nulls(draw: st.DrawFn, body: dict[str, Any]) -> None:
    placement = _any_placement(draw, body)
    placement[draw(st.sampled_from(["role", "endpoint", "nodes", "backendRef", "weight"]))] = None
    if draw(st.booleans()):
        body["spec"]["traffic"]["stepPercent"] = None


MUTATIONS: tuple[Mutation, ...] = (
    _nulls,
    _nodes_edge,
    _priority_collision,
    _role_flip,
    _provider_type_change,
    _provider_extra_member,
    _drop_backend,
    _timeout_edge,
    _failback_edge,
    _method_body,
    _traffic_layers,
    _route53_edge,
    _weights,
    _step,
    _names,
)


@st.composite
def pool_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid pool with 0..2 edits, each at the boundary of one rule or bound."""
    body = draw(valid_pools())
    # Mostly one or two edits: unedited pools only prove that valid pools pass.
    for _ in range(draw(st.sampled_from([1, 2, 0, 1, 2]))):
        draw(st.sampled_from(MUTATIONS))(draw, body)
    return body
