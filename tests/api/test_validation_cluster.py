"""The real apiserver accepts every example and rejects invalid pools with a useful message."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crossfade.api import InvalidPoolError, parse_pool
from crossfade.testing.controlplane import TestCluster, upstream_crds
from tests.api.invalid_cases import INVALID_CASES, InvalidCase
from tests.api.kube import PoolClient
from tests.api.samples import base_pool, example_documents

pytestmark = pytest.mark.cluster

EXAMPLES = example_documents()


@pytest.fixture(scope="module")
def with_gateway_api(pool_crd: TestCluster) -> TestCluster:
    """Examples may carry an HTTPRoute next to the pool."""
    pool_crd.install_crds(upstream_crds("gateway-api"))
    return pool_crd


def test_there_are_at_least_twenty_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 20
    assert len({case.id for case in INVALID_CASES}) == len(INVALID_CASES)


@pytest.mark.parametrize(("name", "body"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_example_is_accepted_by_server_side_dry_run(
    name: str, body: dict[str, Any], pools: PoolClient, with_gateway_api: TestCluster
) -> None:
    kind = body["kind"]
    if kind == "InferencePool":
        reply = pools.dry_run_create(body)
    else:
        resource = {"Service": "api/v1/namespaces/{ns}/services"}.get(
            kind, "apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes"
        )
        url = f"{pools.cluster.server}/{resource.format(ns=pools.namespace)}"
        reply = pools.request("POST", f"{url}?dryRun=All&fieldValidation=Strict", body=body)
    assert reply.ok, f"{name}: {reply.message}"
    if kind == "InferencePool":
        # Server defaults and the models' defaults agree on every field.
        assert reply.body["spec"] == parse_pool(body).to_wire()["spec"]


def test_base_pool_is_accepted(pools: PoolClient) -> None:
    reply = pools.dry_run_create(base_pool("base"))
    assert reply.ok, reply.message


@pytest.mark.parametrize("case", INVALID_CASES, ids=[case.id for case in INVALID_CASES])
def test_invalid_pool_is_rejected_naming_field_and_fix(
    case: InvalidCase, pools: PoolClient
) -> None:
    reply = pools.dry_run_create(case.body())
    assert not reply.ok, f"{case.id} was accepted"
    assert reply.status in {400, 422}, reply.body
    assert case.api_path in reply.message, reply.message
    assert case.api_text in reply.message, reply.message


@pytest.mark.parametrize("case", INVALID_CASES, ids=[case.id for case in INVALID_CASES])
def test_invalid_pool_is_rejected_by_parse_pool_at_the_same_field(case: InvalidCase) -> None:
    with pytest.raises(InvalidPoolError) as caught:
        parse_pool(case.body())
    paths = [error.path for error in caught.value.errors]
    assert any(path.startswith(case.python_path) for path in paths), paths


def test_provider_type_is_immutable(pools: PoolClient) -> None:
    created = pools.create(base_pool("immutable"))
    assert created.ok, created.message
    placements = copy.deepcopy(created.body["spec"]["placements"])
    placements[0]["provider"] = {
        "type": "GKENodePool",
        "gkeNodePool": {
            "project": "my-project",
            "location": "europe-west4",
            "cluster": "c",
            "nodePool": "n",
        },
    }
    reply = pools.merge_patch("immutable", {"spec": {"placements": placements}})
    assert not reply.ok
    assert "spec.placements[0].provider.type" in reply.message, reply.message
    assert "provider.type is immutable" in reply.message, reply.message
    # Other changes to the same placement stay allowed.
    placements[0]["provider"] = created.body["spec"]["placements"][0]["provider"]
    placements[0]["nodes"]["max"] = 6
    allowed = pools.merge_patch("immutable", {"spec": {"placements": placements}})
    assert allowed.ok, allowed.message
