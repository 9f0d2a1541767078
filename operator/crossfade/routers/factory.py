"""Router factory: build the traffic routers an InferencePool's spec names.

The spec is taken in its wire form (camelCase mapping, as stored in the cluster, or a
pydantic model, dumped by alias). Layers and the fields read here:

- ``traffic.gatewayAPI``: ``httpRouteRef {name, namespace?}``, ``ruleNames?``,
  ``driftPolicy?`` (Reassert | BackOff); every placement then needs ``backendRef
  {kind?, group?, name, namespace?, port?}``.
- ``traffic.route53``: built by ``crossfade.routers.route53.build_route53_router(spec,
  context)`` when that module is installed.
- no layer, or ``observe_only=True``: a ``NoopRouter`` (observe-only wraps the real
  routers so reads still show the layer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from crossfade.routers.base import DriftPolicy, RouterConfigError, TrafficRouter
from crossfade.routers.httproute import BackendRef, HTTPRouteRouter, HTTPRouteTarget
from crossfade.routers.noop import NoopRouter

ROUTE53_MODULE = "crossfade.routers.route53"
ROUTE53_BUILDER = "build_route53_router"


class SupportsModelDump(Protocol):
    """A pydantic model (the api package's InferencePoolSpec)."""

    def model_dump(self, *, by_alias: bool = ..., exclude_none: bool = ...) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RouterContext:
    """What builders need besides the spec: the pool's identity and shared clients.

    ``kube_api_client`` is a ``kubernetes_asyncio`` ApiClient for the cluster holding the
    routes; ``clients`` carries anything other builders need (for example a Route53 client).
    """

    pool_namespace: str
    pool_name: str
    kube_api_client: Any = None
    clients: Mapping[str, Any] = field(default_factory=dict)


RouterBuilder = Callable[[Mapping[str, Any], RouterContext], TrafficRouter]


def as_wire_spec(spec: Mapping[str, Any] | SupportsModelDump) -> Mapping[str, Any]:
    """Return the spec as a camelCase mapping."""
    if isinstance(spec, Mapping):
        return spec
    return spec.model_dump(by_alias=True, exclude_none=True)


def placement_names(spec: Mapping[str, Any]) -> frozenset[str]:
    names = [p.get("name") for p in spec.get("placements") or []]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise RouterConfigError("the pool names no placements (every placement needs a name)")
    return frozenset(str(name) for name in names)


def httproute_target(spec: Mapping[str, Any], context: RouterContext) -> HTTPRouteTarget:
    """Return the HTTPRoute target described by ``traffic.gatewayAPI``."""
    gateway = spec["traffic"]["gatewayAPI"]
    route_ref = gateway.get("httpRouteRef") or {}
    if not route_ref.get("name"):
        raise RouterConfigError("traffic.gatewayAPI.httpRouteRef.name is required")
    backends: list[BackendRef] = []
    for placement in spec.get("placements") or []:
        ref = placement.get("backendRef")
        if not ref or not ref.get("name"):
            raise RouterConfigError(
                f"placement {placement.get('name')} needs backendRef for traffic.gatewayAPI"
            )
        backends.append(
            BackendRef(
                placement=str(placement["name"]),
                name=str(ref["name"]),
                kind=str(ref.get("kind") or "Service"),
                group=str(ref.get("group") or ""),
                namespace=ref.get("namespace"),
                port=ref.get("port"),
            )
        )
    try:
        policy = DriftPolicy(gateway.get("driftPolicy") or DriftPolicy.REASSERT.value)
    except ValueError as exc:
        raise RouterConfigError(f"unknown driftPolicy {gateway.get('driftPolicy')!r}") from exc
    return HTTPRouteTarget(
        namespace=str(route_ref.get("namespace") or context.pool_namespace),
        name=str(route_ref["name"]),
        backends=tuple(backends),
        rule_names=tuple(str(name) for name in gateway.get("ruleNames") or ()),
        drift_policy=policy,
    )


def build_httproute_router(spec: Mapping[str, Any], context: RouterContext) -> TrafficRouter:
    if context.kube_api_client is None:
        raise RouterConfigError("traffic.gatewayAPI needs a Kubernetes API client")
    return HTTPRouteRouter(
        api_client=context.kube_api_client, target=httproute_target(spec, context)
    )


def build_route53_router(spec: Mapping[str, Any], context: RouterContext) -> TrafficRouter:
    try:
        module = importlib.import_module(ROUTE53_MODULE)
    except ImportError as exc:
        raise RouterConfigError(
            "traffic.route53 is set but the Route53 router is not installed"
        ) from exc
    builder: RouterBuilder | None = getattr(module, ROUTE53_BUILDER, None)
    if builder is None:
        raise RouterConfigError(f"{ROUTE53_MODULE} has no {ROUTE53_BUILDER}")
    return builder(spec, context)


LAYER_BUILDERS: Mapping[str, RouterBuilder] = {
    "gatewayAPI": build_httproute_router,
    "route53": build_route53_router,
}


def build_routers(
    *,
    spec: Mapping[str, Any] | SupportsModelDump,
    context: RouterContext,
    observe_only: bool = False,
) -> list[TrafficRouter]:
    """Return one router per traffic layer the spec names (a NoopRouter when none).

    Raises RouterConfigError when a named layer cannot be built.
    """
    wire = as_wire_spec(spec)
    placements = placement_names(wire)
    traffic = wire.get("traffic") or {}
    routers = [
        builder(wire, context) for layer, builder in LAYER_BUILDERS.items() if traffic.get(layer)
    ]
    if not routers:
        return [NoopRouter(placements=placements)]
    if observe_only:
        return [NoopRouter(placements=placements, observed=router) for router in routers]
    return routers
