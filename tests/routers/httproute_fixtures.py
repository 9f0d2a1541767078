"""Fixtures and builders for the HTTPRoute router tests (import the ``*_fixture`` names)."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.routers.base import DriftPolicy
from crossfade.routers.httproute import (
    GATEWAY_GROUP,
    HTTPROUTE_PLURAL,
    HTTPROUTE_VERSION,
    BackendRef,
    HTTPRouteRouter,
    HTTPRouteTarget,
)
from crossfade.testing.controlplane import TestCluster, upstream_crds

INFERENCE_GROUP = "inference.networking.k8s.io"
ROUTE_NAME = "chat"
CRD_SERVED_TIMEOUT_S = 30.0
GITOPS = "gitops"  # the field manager standing in for Argo CD / Flux in these tests


@pytest.fixture(name="gateway_crds", scope="session")
def gateway_crds_fixture(management_cluster: TestCluster) -> TestCluster:
    """Install the pinned upstream Gateway API and Inference Extension CRDs once."""
    management_cluster.install_crds(
        [*upstream_crds("gateway-api"), *upstream_crds("inference-extension")]
    )
    wait_until_served(management_cluster)
    return management_cluster


def wait_until_served(cluster: TestCluster) -> None:
    """Wait until lists answer: a fresh CRD's storage first answers 429 while it initialises."""
    kinds = [
        (GATEWAY_GROUP, HTTPROUTE_VERSION, HTTPROUTE_PLURAL),
        (GATEWAY_GROUP, "v1beta1", "referencegrants"),
        (INFERENCE_GROUP, "v1", "inferencepools"),
    ]
    deadline = time.monotonic() + CRD_SERVED_TIMEOUT_S
    with cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        for group, version, plural in kinds:
            while True:
                try:
                    custom.list_namespaced_custom_object(group, version, "default", plural)
                    break
                except ApiException as exc:
                    if exc.status != 429 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


@pytest.fixture(name="kube")
async def kube_fixture(gateway_crds: TestCluster) -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient on the management cluster, closed after the test."""
    api = await gateway_crds.async_api_client()
    try:
        yield api
    finally:
        await api.close()


def service(name: str, namespace: str, *, port: int = 8000) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port}]},
    }


def inference_pool(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{INFERENCE_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}},
        },
    }


def backend_ref(backend: BackendRef, *, weight: int | None = None) -> dict[str, Any]:
    """Return the route's backendRef entry for one crossfade backend."""
    ref: dict[str, Any] = {"name": backend.name, "kind": backend.kind, "group": backend.group}
    if backend.namespace:
        ref["namespace"] = backend.namespace
    if backend.port is not None:
        ref["port"] = backend.port
    if weight is not None:
        ref["weight"] = weight
    return ref


def route(
    namespace: str,
    *,
    rules: Iterable[Mapping[str, Any]],
    name: str = ROUTE_NAME,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{HTTPROUTE_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "ml"}},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "hostnames": ["chat.example.com"],
            "rules": [dict(rule) for rule in rules],
        },
    }


def steered_rule(
    backends: Iterable[BackendRef], *, weights: Iterable[int] | None = None, name: str | None = None
) -> dict[str, Any]:
    """A rule with a header filter, a path match and a timeout next to the backends."""
    backend_list = list(backends)
    weight_list = list(weights) if weights is not None else [1] * len(backend_list)
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "x-served-by", "value": "crossfade"}]},
            }
        ],
        "timeouts": {"request": "30s"},
        "backendRefs": [
            backend_ref(b, weight=w) for b, w in zip(backend_list, weight_list, strict=True)
        ],
    }
    if name is not None:
        rule["name"] = name
    return rule


def two_services(namespace: str, cluster: TestCluster) -> tuple[BackendRef, BackendRef]:
    """Create Services for placements 'aws' and 'gcp'; return their backends."""
    aws = BackendRef(placement="aws", name="llm-aws", port=8000)
    gcp = BackendRef(placement="gcp", name="llm-gcp", port=8000)
    cluster.apply_manifest([service(aws.name, namespace), service(gcp.name, namespace)])
    return aws, gcp


def make_router(
    api: Any,
    namespace: str,
    backends: Iterable[BackendRef],
    *,
    policy: DriftPolicy = DriftPolicy.REASSERT,
    rule_names: tuple[str, ...] = (),
    name: str = ROUTE_NAME,
) -> HTTPRouteRouter:
    target = HTTPRouteTarget(
        namespace=namespace,
        name=name,
        backends=tuple(backends),
        rule_names=rule_names,
        drift_policy=policy,
    )
    return HTTPRouteRouter(api_client=api, target=target)


def get_route(cluster: TestCluster, namespace: str, name: str = ROUTE_NAME) -> dict[str, Any]:
    with cluster.api_client() as api:
        obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GATEWAY_GROUP, HTTPROUTE_VERSION, namespace, HTTPROUTE_PLURAL, name
        )
    return obj


def live_weights(obj: Mapping[str, Any], rule_index: int = 0) -> list[int]:
    return [ref["weight"] for ref in obj["spec"]["rules"][rule_index]["backendRefs"]]


def without_weights(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Return the route's spec with every backendRef weight removed (for comparisons)."""
    spec = copy.deepcopy(dict(obj["spec"]))
    for rule in spec["rules"]:
        for ref in rule.get("backendRefs", []):
            ref.pop("weight", None)
    return spec


def edit_route(
    cluster: TestCluster,
    namespace: str,
    patch: list[dict[str, Any]],
    *,
    manager: str,
    name: str = ROUTE_NAME,
) -> dict[str, Any]:
    """JSON-patch the route as another field manager (a person with kubectl, a controller)."""
    with cluster.api_client() as api:
        obj: dict[str, Any] = client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GATEWAY_GROUP,
            HTTPROUTE_VERSION,
            namespace,
            HTTPROUTE_PLURAL,
            name,
            patch,
            field_manager=manager,
            _content_type="application/json-patch+json",
        )
    return obj


def set_route_status(
    cluster: TestCluster, namespace: str, *, parents: list[dict[str, Any]], name: str = ROUTE_NAME
) -> None:
    """Write status.parents as a Gateway controller would (status subresource)."""
    with cluster.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GATEWAY_GROUP,
            HTTPROUTE_VERSION,
            namespace,
            HTTPROUTE_PLURAL,
            name,
            {"status": {"parents": parents}},
            _content_type="application/merge-patch+json",
        )


def parent_status(*, generation: int, accepted: str, resolved: str) -> dict[str, Any]:
    def condition(kind: str, status: str, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": f"{kind} is {status}",
            "observedGeneration": generation,
            "lastTransitionTime": "2026-11-26T12:00:00Z",
        }

    return {
        "parentRef": {"group": GATEWAY_GROUP, "kind": "Gateway", "name": "inference-gateway"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [
            condition("Accepted", accepted, "Accepted" if accepted == "True" else "NotAllowed"),
            condition(
                "ResolvedRefs",
                resolved,
                "ResolvedRefs" if resolved == "True" else "BackendNotFound",
            ),
        ],
    }


def create_namespace(cluster: TestCluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    with cluster.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
    return name
