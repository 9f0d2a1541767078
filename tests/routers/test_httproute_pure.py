"""Pure parts of the HTTPRoute router: weight scaling, rule selection, status, grants, patch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.routers.base import (
    CROSSFADE_WEIGHT_TOTAL,
    BackendMismatchError,
    InvalidWeightsError,
    RouteLimitExceededError,
    RouteNotFoundError,
    RouteReading,
    RouterError,
    to_crossfade_scale,
    to_layer_scale,
    traffic_synced,
    validate_weights,
)
from crossfade.routers.httproute import (
    FIELD_MANAGER,
    MAX_BACKEND_REFS,
    MAX_LAYER_WEIGHT,
    WEIGHTS_ANNOTATION,
    BackendRef,
    HTTPRouteRouter,
    HTTPRouteTarget,
    SelectedRule,
    _is_failed_precondition,
    grant_allows,
    parent_acceptance,
    rules_owner,
    select_rules,
    weights_patch,
)

NS = "serving"
AWS = BackendRef(placement="aws", name="llm-aws", port=8000)
GCP = BackendRef(
    placement="gcp",
    name="llm-gcp",
    kind="InferencePool",
    group="inference.networking.k8s.io",
    namespace="models",
)
TARGET = HTTPRouteTarget(namespace=NS, name="chat", backends=(AWS, GCP))


def ref(backend: BackendRef, weight: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": backend.group,
        "kind": backend.kind,
        "name": backend.name,
        "weight": weight,
    }
    if backend.namespace:
        out["namespace"] = backend.namespace
    if backend.port:
        out["port"] = backend.port
    return out


def route_with(*rules: list[dict[str, Any]], names: tuple[str | None, ...] = ()) -> dict[str, Any]:
    built = []
    for index, refs in enumerate(rules):
        rule: dict[str, Any] = {"backendRefs": refs}
        if index < len(names) and names[index] is not None:
            rule["name"] = names[index]
        built.append(rule)
    return {
        "metadata": {"namespace": NS, "name": "chat", "generation": 3},
        "spec": {"rules": built},
    }


crossfade_weights = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 100), min_size=1
).filter(lambda w: sum(w.values()) > 0)


@given(crossfade_weights)
def test_layer_scale_keeps_ratios_bounds_and_non_zero_shares(weights: dict[str, int]) -> None:
    layer = to_layer_scale(weights, max_weight=MAX_LAYER_WEIGHT)
    assert all(0 <= value <= MAX_LAYER_WEIGHT for value in layer.values())
    assert sum(layer.values()) > 0
    assert {k for k, v in layer.items() if v > 0} == {k for k, v in weights.items() if v > 0}
    a, b = next(iter(weights)), list(weights)[-1]
    assert layer[a] * weights[b] == layer[b] * weights[a]  # exact ratios: factor is an integer


@given(crossfade_weights)
def test_back_to_crossfade_scale_sums_to_the_total(weights: dict[str, int]) -> None:
    layer = to_layer_scale(weights, max_weight=MAX_LAYER_WEIGHT)
    back = to_crossfade_scale(layer)
    assert sum(back.values()) == CROSSFADE_WEIGHT_TOTAL
    if sum(weights.values()) == CROSSFADE_WEIGHT_TOTAL:
        assert back == weights


def test_small_layer_scale_keeps_a_small_share_alive() -> None:
    layer = to_layer_scale({"a": 1, "b": 999}, max_weight=255)
    assert layer == {"a": 1, "b": 255}


def test_validate_weights_rejects_unsafe_plans() -> None:
    placements = {"aws", "gcp"}
    with pytest.raises(InvalidWeightsError, match="sum to zero"):
        validate_weights({"aws": 0, "gcp": 0}, placements=placements)
    with pytest.raises(InvalidWeightsError, match="negative"):
        validate_weights({"aws": -1, "gcp": 101}, placements=placements)
    with pytest.raises(InvalidWeightsError, match="unknown placements: azure"):
        validate_weights({"azure": 100}, placements=placements)
    assert validate_weights({"aws": 100}, placements=placements) == {"aws": 100, "gcp": 0}


def test_select_rules_maps_backends_and_skips_unrelated_rules() -> None:
    unrelated = [{"kind": "Service", "name": "docs", "port": 80}]
    route = route_with(unrelated, [ref(GCP), ref(AWS)])
    assert select_rules(route, TARGET) == [
        SelectedRule(index=1, name=None, refs=((0, "gcp"), (1, "aws")))
    ]


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        ([ref(AWS)], r"no backend for placements \['gcp'\]"),
        ([ref(AWS), ref(GCP), {"name": "canary", "port": 1}], "unknown backends"),
        ([ref(AWS), ref(AWS), ref(GCP)], r"placements referenced twice \['aws'\]"),
        ([ref(AWS), {**ref(GCP), "namespace": NS}], "unknown backends"),  # same name, other ns
        ([{**ref(AWS), "port": 9000}, ref(GCP)], "unknown backends"),  # other port
    ],
)
def test_select_rules_refuses_rules_that_do_not_match_the_pool(
    refs: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(BackendMismatchError, match=expected):
        select_rules(route_with(refs), TARGET)


def test_select_rules_by_name_and_missing_names() -> None:
    route = route_with([ref(AWS), ref(GCP)], [ref(AWS), ref(GCP)], names=("chat", "batch"))
    named = HTTPRouteTarget(namespace=NS, name="chat", backends=(AWS, GCP), rule_names=("batch",))
    assert [rule.index for rule in select_rules(route, named)] == [1]
    absent = HTTPRouteTarget(namespace=NS, name="chat", backends=(AWS, GCP), rule_names=("x",))
    with pytest.raises(BackendMismatchError, match="no rule named"):
        select_rules(route, absent)
    with pytest.raises(BackendMismatchError, match="references the pool's backends"):
        select_rules(route_with([{"name": "docs", "port": 80}]), TARGET)


def test_backend_ref_defaults_match_the_crd_defaults() -> None:
    # The apiserver fills group "" and kind Service; an omitted namespace is the route's.
    assert AWS.matches({"name": "llm-aws", "port": 8000}, route_namespace=NS)
    assert not AWS.matches({"name": "llm-aws", "port": 8000, "namespace": "x"}, route_namespace=NS)


def condition(kind: str, status: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": "R",
        "message": "m",
        "observedGeneration": generation,
    }


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, (None, "Pending")),
        (
            [condition("Accepted", "True", 3), condition("ResolvedRefs", "True", 3)],
            (True, "Accepted"),
        ),
        (
            [condition("Accepted", "True", 2), condition("ResolvedRefs", "True", 2)],
            (None, "Pending"),
        ),
        (
            [condition("Accepted", "False", 3), condition("ResolvedRefs", "True", 3)],
            (False, "NotAccepted"),
        ),
        (
            [condition("Accepted", "True", 3), condition("ResolvedRefs", "False", 3)],
            (False, "RefsNotResolved"),
        ),
        ([condition("Accepted", "True", 3)], (None, "Pending")),
    ],
)
def test_parent_acceptance(
    conditions: list[dict[str, Any]] | None, expected: tuple[Any, str]
) -> None:
    route = route_with([ref(AWS), ref(GCP)])
    if conditions is not None:
        route["status"] = {"parents": [{"parentRef": {"name": "gw"}, "conditions": conditions}]}
    accepted, reason, _ = parent_acceptance(route)
    assert (accepted, reason) == expected


GRANT = {
    "spec": {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": NS}],
        "to": [{"group": "inference.networking.k8s.io", "kind": "InferencePool"}],
    }
}


def test_grant_allows_matches_from_namespace_and_to_kind_and_name() -> None:
    assert grant_allows(GRANT, backend=GCP, route_namespace=NS)
    assert not grant_allows(GRANT, backend=GCP, route_namespace="elsewhere")
    assert not grant_allows(GRANT, backend=AWS, route_namespace=NS)  # a Service is not granted
    named = json.loads(json.dumps(GRANT))
    named["spec"]["to"][0]["name"] = "other-pool"
    assert not grant_allows(named, backend=GCP, route_namespace=NS)
    named["spec"]["to"][0]["name"] = GCP.name
    assert grant_allows(named, backend=GCP, route_namespace=NS)


def test_weights_patch_guards_identity_and_weight_and_records_the_weights() -> None:
    route = route_with([ref(AWS, 5), ref(GCP, 7)])
    rules = select_rules(route, TARGET)
    ops = weights_patch(route, rules=rules, layer_weights={"aws": 5, "gcp": 9})
    assert {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": GCP.name} in ops
    assert {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 7} in ops
    assert {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 9} in ops
    assert not any(op["op"] == "replace" and "/backendRefs/0/" in op["path"] for op in ops)
    assert ops[-1] == {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {WEIGHTS_ANNOTATION: '{"aws":5,"gcp":9}'},
    }
    route["metadata"]["annotations"] = {"other": "x"}
    escaped = weights_patch(route, rules=rules, layer_weights={"aws": 5, "gcp": 9})[-1]
    assert escaped["path"] == "/metadata/annotations/crossfade.dev~1weights"


def test_weights_patch_is_empty_when_nothing_changes() -> None:
    route = route_with([ref(AWS, 5), ref(GCP, 7)])
    route["metadata"]["annotations"] = {WEIGHTS_ANNOTATION: '{"aws":5,"gcp":7}'}
    rules = select_rules(route, TARGET)
    assert weights_patch(route, rules=rules, layer_weights={"aws": 5, "gcp": 7}) == []


def test_rules_owner_names_the_latest_other_manager() -> None:
    def entry(manager: str, time: str) -> dict[str, Any]:
        return {"manager": manager, "time": time, "fieldsV1": {"f:spec": {"f:rules": {}}}}

    route = {
        "metadata": {
            "managedFields": [
                entry("argocd-controller", "2026-11-26T10:00:00Z"),
                entry("kubectl-edit", "2026-11-26T11:00:00Z"),
                entry(FIELD_MANAGER, "2026-11-26T12:00:00Z"),
                {
                    "manager": "labeler",
                    "time": "2026-11-26T13:00:00Z",
                    "fieldsV1": {"f:metadata": {}},
                },
            ]
        }
    }
    assert rules_owner(route) == "kubectl-edit"
    assert rules_owner({"metadata": {}}) is None


def api_exception(status: int, body: dict[str, Any]) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body)
    return exc


def test_failed_patch_test_is_told_apart_from_a_schema_rejection() -> None:
    failed_test = api_exception(422, {"reason": "Invalid", "details": {}})
    schema = api_exception(
        422, {"details": {"causes": [{"field": "spec.rules[0].backendRefs[0].weight"}]}}
    )
    assert _is_failed_precondition(failed_test)
    assert _is_failed_precondition(api_exception(409, {}))
    assert not _is_failed_precondition(schema)
    assert not _is_failed_precondition(api_exception(500, {}))


def test_more_backends_than_the_api_allows_are_refused_up_front() -> None:
    backends = tuple(
        BackendRef(placement=f"p{i}", name=f"svc{i}", port=80) for i in range(MAX_BACKEND_REFS + 1)
    )
    target = HTTPRouteTarget(namespace=NS, name="chat", backends=backends)
    with pytest.raises(RouteLimitExceededError, match="16 backendRefs"):
        HTTPRouteRouter(api_client=None, target=target)  # type: ignore[arg-type]


def reading(
    *, accepted: bool | None, drift: bool = False, reason: str = "Accepted"
) -> RouteReading:
    return RouteReading(
        weights={"aws": 100}, accepted=accepted, drift=drift, message="m", reason=reason
    )


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (reading(accepted=True), ("True", "Accepted")),
        (reading(accepted=None, reason="Pending"), ("Unknown", "Pending")),
        (reading(accepted=False, reason="RefsNotResolved"), ("False", "RefsNotResolved")),
        (reading(accepted=True, drift=True, reason="WeightsDrifted"), ("False", "WeightsDrifted")),
        (BackendMismatchError("rule #0 does not match"), ("False", "BackendMismatch")),
        (RouteNotFoundError("gone"), ("False", "RouteNotFound")),
    ],
)
def test_traffic_synced_condition(
    outcome: RouteReading | RouterError, expected: tuple[str, str]
) -> None:
    condition = traffic_synced(outcome)
    assert (condition.status, condition.reason) == expected
    assert condition.message
