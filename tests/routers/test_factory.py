"""Router factory and no-op router: which routers a pool's spec yields, observe-only reads."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from crossfade.routers import factory
from crossfade.routers.base import (
    DriftPolicy,
    InvalidWeightsError,
    RouterConfigError,
    RouteReading,
    TrafficRouter,
)
from crossfade.routers.factory import RouterContext, build_routers
from crossfade.routers.httproute import BackendRef, HTTPRouteRouter
from crossfade.routers.noop import NoopRouter

CONTEXT = RouterContext(pool_namespace="serving", pool_name="llama", kube_api_client=object())


def spec(traffic: dict[str, Any] | None = None, **placement_extra: Any) -> dict[str, Any]:
    return {
        "placements": [
            {"name": "aws", "backendRef": {"name": "llm-aws", "port": 8000}, **placement_extra},
            {
                "name": "gcp",
                "backendRef": {
                    "group": "inference.networking.k8s.io",
                    "kind": "InferencePool",
                    "name": "llm-gcp",
                    "namespace": "models",
                },
            },
        ],
        "traffic": traffic or {},
    }


GATEWAY = {
    "gatewayAPI": {
        "httpRouteRef": {"name": "chat"},
        "ruleNames": ["completions"],
        "driftPolicy": "BackOff",
    }
}


def test_gateway_api_layer_builds_an_httproute_router_from_the_wire_spec() -> None:
    (router,) = build_routers(spec=spec(GATEWAY), context=CONTEXT)
    assert isinstance(router, HTTPRouteRouter)
    assert isinstance(router, TrafficRouter)
    assert router.name == "httproute/serving/chat"
    assert router.target.rule_names == ("completions",)
    assert router.target.drift_policy is DriftPolicy.BACK_OFF
    assert router.target.backends == (
        BackendRef(placement="aws", name="llm-aws", port=8000),
        BackendRef(
            placement="gcp",
            name="llm-gcp",
            kind="InferencePool",
            group="inference.networking.k8s.io",
            namespace="models",
        ),
    )


def test_a_pydantic_like_spec_is_dumped_by_alias() -> None:
    class Model:
        def model_dump(
            self, *, by_alias: bool = False, exclude_none: bool = False
        ) -> dict[str, Any]:
            assert by_alias and exclude_none
            return spec(GATEWAY)

    (router,) = build_routers(spec=Model(), context=CONTEXT)
    assert isinstance(router, HTTPRouteRouter)


@pytest.mark.parametrize(
    ("pool_spec", "message"),
    [
        (spec({"gatewayAPI": {"httpRouteRef": {}}}), "httpRouteRef.name"),
        (spec({"gatewayAPI": {"httpRouteRef": {"name": "r"}, "driftPolicy": "Sulk"}}), "Sulk"),
        ({"placements": [], "traffic": GATEWAY}, "no placements"),
        (
            {"placements": [{"name": "aws"}], "traffic": GATEWAY},
            "placement aws needs backendRef",
        ),
    ],
)
def test_bad_traffic_config_is_a_typed_error(pool_spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RouterConfigError, match=message):
        build_routers(spec=pool_spec, context=CONTEXT)


def test_gateway_api_without_a_kubernetes_client_is_a_config_error() -> None:
    context = RouterContext(pool_namespace="serving", pool_name="llama")
    with pytest.raises(RouterConfigError, match="Kubernetes API client"):
        build_routers(spec=spec(GATEWAY), context=context)


def test_route53_layer_without_its_module_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(factory, "ROUTE53_MODULE", "crossfade.routers.no_such_module")
    with pytest.raises(RouterConfigError, match="Route53 router is not installed"):
        build_routers(spec=spec({"route53": {"recordName": "chat."}}), context=CONTEXT)


def test_route53_layer_is_delegated_to_the_route53_module(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, RouterContext]] = []
    fake_module = types.ModuleType("fake_route53")
    marker = NoopRouter(placements=frozenset({"aws", "gcp"}))

    def builder(pool_spec: Any, context: RouterContext) -> TrafficRouter:
        seen.append((pool_spec, context))
        return marker

    fake_module.build_route53_router = builder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_route53", fake_module)
    monkeypatch.setattr(factory, "ROUTE53_MODULE", "fake_route53")
    routers = build_routers(
        spec=spec({**GATEWAY, "route53": {"recordName": "chat."}}), context=CONTEXT
    )
    assert [type(r) for r in routers] == [HTTPRouteRouter, NoopRouter]
    assert routers[1] is marker
    assert seen[0][1] is CONTEXT


async def test_no_traffic_layer_yields_a_noop_router_that_records_only() -> None:
    (router,) = build_routers(spec=spec(), context=CONTEXT)
    assert isinstance(router, NoopRouter)
    empty = await router.read()
    first = await router.apply({"aws": 70, "gcp": 30})
    again = await router.apply({"aws": 70, "gcp": 30})
    reading = await router.read()
    with pytest.raises(InvalidWeightsError):
        await router.apply({"aws": 0, "gcp": 0})
    assert empty.weights is None
    assert (first.writes, first.changed, again.changed) == (0, True, False)
    assert reading.weights == {"aws": 70, "gcp": 30}


class ObservedRouter:
    """A router that must never be asked to write (observe-only)."""

    name = "httproute/serving/chat"

    async def read(self) -> RouteReading:
        return RouteReading(weights={"aws": 100, "gcp": 0}, accepted=True, drift=True, message="x")

    async def apply(self, weights: Any) -> Any:
        raise AssertionError("observe-only must not write")


async def test_observe_only_reads_the_real_layer_and_never_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(factory.LAYER_BUILDERS, "gatewayAPI", lambda s, c: ObservedRouter())  # type: ignore[index]
    (router,) = build_routers(spec=spec(GATEWAY), context=CONTEXT, observe_only=True)
    reading = await router.read()
    result = await router.apply({"aws": 0, "gcp": 100})
    assert router.name == "observe-only/httproute/serving/chat"
    assert reading.drift and reading.weights == {"aws": 100, "gcp": 0}
    assert (result.writes, result.reason) == (0, "ObserveOnly")
