"""HTTPRoute router on a real kube-apiserver with the upstream Gateway API CRDs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.routers.httproute_fixtures import (
    GITOPS,
    INFERENCE_GROUP,
    create_namespace,
    edit_route,
    gateway_crds_fixture,  # noqa: F401  (fixture)
    get_route,
    inference_pool,
    kube_fixture,  # noqa: F401  (fixture)
    live_weights,
    make_router,
    parent_status,
    route,
    service,
    set_route_status,
    steered_rule,
    two_services,
    without_weights,
)

from crossfade.routers.base import (
    BackendMismatchError,
    BackendNotFoundError,
    DriftPolicy,
    InvalidWeightsError,
    ReferenceNotPermittedError,
    RouteNotFoundError,
    RouterConflictError,
    WeightsDriftedError,
)
from crossfade.routers.httproute import (
    FIELD_MANAGER,
    GATEWAY_GROUP,
    WEIGHTS_ANNOTATION,
    BackendRef,
)
from crossfade.testing.controlplane import TestCluster

pytestmark = pytest.mark.cluster


def managers_of_rules(obj: dict[str, Any]) -> set[str]:
    return {
        entry["manager"]
        for entry in obj["metadata"]["managedFields"]
        if "f:rules" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    }


async def test_shift_changes_only_weights_and_keeps_every_other_field(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    other = BackendRef(placement="docs", name="docs-site", port=80)
    gateway_crds.apply_manifest(service(other.name, namespace, port=80))
    unrelated = {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}]}
    unrelated["backendRefs"] = [{"name": other.name, "port": 80, "weight": 7}]
    gateway_crds.apply_manifest(
        route(namespace, rules=[steered_rule([aws, gcp], weights=[1, 1]), unrelated]),
        field_manager=GITOPS,
    )
    before = get_route(gateway_crds, namespace)
    router = make_router(kube, namespace, [aws, gcp])

    first = await router.apply({"aws": 100, "gcp": 0})
    after_first = get_route(gateway_crds, namespace)
    second = await router.apply({"aws": 30, "gcp": 70})
    after_second = get_route(gateway_crds, namespace)
    reading = await router.read()

    assert (first.writes, second.writes) == (1, 1)
    assert live_weights(after_first) == [1_000_000, 0]
    assert live_weights(after_second) == [300_000, 700_000]
    assert live_weights(after_second, rule_index=1) == [7]  # the unrelated rule is untouched
    assert without_weights(after_second) == without_weights(before)
    assert after_second["metadata"]["labels"] == before["metadata"]["labels"]
    assert reading.weights == {"aws": 30, "gcp": 70}
    assert reading.layer_weights == {"aws": 300_000, "gcp": 700_000}
    assert not reading.drift
    assert json.loads(after_second["metadata"]["annotations"][WEIGHTS_ANNOTATION]) == {
        "aws": 300_000,
        "gcp": 700_000,
    }
    # Atomic rules list: whoever changed a weight owns .spec.rules, and that is crossfade now.
    assert managers_of_rules(after_second) == {FIELD_MANAGER}


async def test_after_a_shift_a_non_forced_gitops_apply_conflicts_on_the_whole_rules_list(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    # Documents why crossfade cannot own only the weights (docs/traffic.md): rules is atomic.
    aws, gcp = two_services(namespace, gateway_crds)
    manifest = route(namespace, rules=[steered_rule([aws, gcp])])
    gateway_crds.apply_manifest(manifest, field_manager=GITOPS)
    await make_router(kube, namespace, [aws, gcp]).apply({"aws": 100, "gcp": 0})
    manifest["spec"]["rules"][0]["timeouts"] = {"request": "60s"}  # git changes a timeout

    with gateway_crds.api_client() as api, pytest.raises(ApiException) as conflict:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GATEWAY_GROUP,
            "v1",
            namespace,
            "httproutes",
            "chat",
            manifest,
            field_manager=GITOPS,
            _content_type="application/apply-patch+yaml",
        )

    assert conflict.value.status == 409
    causes = json.loads(conflict.value.body)["details"]["causes"]
    assert [c["field"] for c in causes] == [".spec.rules"]
    assert causes[0]["message"].startswith(f'conflict with "{FIELD_MANAGER}"')


async def test_applying_the_weights_already_held_makes_no_write(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    await router.apply({"aws": 50, "gcp": 50})
    version = get_route(gateway_crds, namespace)["metadata"]["resourceVersion"]

    again = await router.apply({"aws": 50, "gcp": 50})

    assert (again.writes, again.changed, again.reason) == (0, False, "WeightsUnchanged")
    assert get_route(gateway_crds, namespace)["metadata"]["resourceVersion"] == version


async def test_drift_by_another_manager_is_reported_and_reasserted(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    manifest = route(namespace, rules=[steered_rule([aws, gcp], weights=[1, 1])])
    gateway_crds.apply_manifest(manifest, field_manager=GITOPS)
    router = make_router(kube, namespace, [aws, gcp])
    await router.apply({"aws": 0, "gcp": 100})

    # A GitOps sync force-applies the weights from git (1:1) over ours.
    gateway_crds.apply_manifest(manifest, field_manager=GITOPS)
    reading = await router.read()
    result = await router.apply({"aws": 0, "gcp": 100})

    assert reading.drift
    assert reading.drift_manager == GITOPS
    assert reading.reason == "WeightsDrifted"
    assert reading.weights == {"aws": 50, "gcp": 50}
    assert result.drift_manager == GITOPS
    assert result.reason == "DriftReasserted"
    assert live_weights(get_route(gateway_crds, namespace)) == [0, 1_000_000]
    assert not (await router.read()).drift


async def test_back_off_policy_leaves_the_other_managers_weights(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp], policy=DriftPolicy.BACK_OFF)
    await router.apply({"aws": 100, "gcp": 0})
    edit_route(
        gateway_crds,
        namespace,
        [{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 5}],
        manager="kubectl-edit",
    )

    with pytest.raises(WeightsDriftedError) as drifted:
        await router.apply({"aws": 100, "gcp": 0})

    assert drifted.value.manager == "kubectl-edit"
    assert live_weights(get_route(gateway_crds, namespace)) == [1_000_000, 5]


async def test_concurrent_edit_of_other_fields_between_read_and_write_survives(
    gateway_crds: TestCluster, kube: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    real_get = router._get_route
    calls = 0

    async def get_then_someone_edits() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        obj = await real_get()
        if calls == 1:  # after our read, before our write: a person changes the timeout
            edit_route(
                gateway_crds,
                namespace,
                [{"op": "replace", "path": "/spec/rules/0/timeouts/request", "value": "45s"}],
                manager="kubectl-edit",
            )
        return obj

    monkeypatch.setattr(router, "_get_route", get_then_someone_edits)
    result = await router.apply({"aws": 20, "gcp": 80})
    stored = get_route(gateway_crds, namespace)

    assert result.writes == 1
    assert stored["spec"]["rules"][0]["timeouts"]["request"] == "45s"
    assert live_weights(stored) == [200_000, 800_000]


async def test_concurrent_weight_edit_fails_the_guard_and_the_router_replans(
    gateway_crds: TestCluster, kube: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp], policy=DriftPolicy.BACK_OFF)
    await router.apply({"aws": 50, "gcp": 50})
    real_get = router._get_route
    calls = 0

    async def get_then_someone_sets_weight() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        obj = await real_get()
        if calls == 1:
            edit_route(
                gateway_crds,
                namespace,
                [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 3}],
                manager="kubectl-edit",
            )
        return obj

    monkeypatch.setattr(router, "_get_route", get_then_someone_sets_weight)
    # The first patch carries a test of the weight it read (500000) and must fail; the
    # re-read then sees the person's weight, and BackOff leaves it in place.
    with pytest.raises(WeightsDriftedError):
        await router.apply({"aws": 10, "gcp": 90})

    assert calls == 2
    assert live_weights(get_route(gateway_crds, namespace)) == [3, 500_000]


async def test_a_rule_inserted_before_ours_mid_write_does_not_get_our_weights(
    gateway_crds: TestCluster, kube: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    docs = BackendRef(placement="docs", name="docs-site", port=80)
    gateway_crds.apply_manifest(service(docs.name, namespace, port=80))
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    real_get = router._get_route
    calls = 0
    inserted = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
        "backendRefs": [
            {"name": docs.name, "port": 80, "weight": 1},
            {"name": docs.name, "port": 80, "weight": 1},
        ],
    }

    async def get_then_someone_inserts_a_rule() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        obj = await real_get()
        if calls == 1:  # indexes shift under the patch the router is about to send
            edit_route(
                gateway_crds,
                namespace,
                [{"op": "add", "path": "/spec/rules/0", "value": inserted}],
                manager="kubectl-edit",
            )
        return obj

    monkeypatch.setattr(router, "_get_route", get_then_someone_inserts_a_rule)
    result = await router.apply({"aws": 25, "gcp": 75})
    stored = get_route(gateway_crds, namespace)

    assert calls == 2  # the identity guards failed once, the re-read found our rule at 1
    assert result.writes == 2
    assert live_weights(stored, rule_index=0) == [1, 1]
    assert live_weights(stored, rule_index=1) == [250_000, 750_000]


async def test_missing_route_is_a_typed_error(kube: Any, namespace: str) -> None:
    router = make_router(kube, namespace, [BackendRef(placement="aws", name="x", port=80)])
    with pytest.raises(RouteNotFoundError):
        await router.read()
    with pytest.raises(RouteNotFoundError):
        await router.apply({"aws": 100})


async def test_missing_backend_blocks_traffic_to_it_but_not_weight_zero(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws = BackendRef(placement="aws", name="llm-aws", port=8000)
    gone = BackendRef(placement="gcp", name="llm-gcp-missing", port=8000)
    gateway_crds.apply_manifest(service(aws.name, namespace))
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gone], weights=[1, 0])]))
    router = make_router(kube, namespace, [aws, gone])

    with pytest.raises(BackendNotFoundError, match="llm-gcp-missing"):
        await router.apply({"aws": 50, "gcp": 50})
    unchanged = live_weights(get_route(gateway_crds, namespace))
    applied = await router.apply({"aws": 100, "gcp": 0})
    edit_route(
        gateway_crds,
        namespace,
        [{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 9}],
        manager="kubectl-edit",
    )
    reading = await router.read()

    assert unchanged == [1, 0]
    assert applied.writes == 1
    assert reading.accepted is False
    assert reading.reason == "WeightsDrifted"  # drift outranks the backend problem in reason
    assert "llm-gcp-missing of placement gcp does not exist" in reading.message


async def test_cross_namespace_inference_pool_needs_a_reference_grant(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    backends_ns = create_namespace(gateway_crds, "models")
    aws = BackendRef(placement="aws", name="llama-aws", kind="InferencePool", group=INFERENCE_GROUP)
    gcp = BackendRef(
        placement="gcp",
        name="llama-gcp",
        kind="InferencePool",
        group=INFERENCE_GROUP,
        namespace=backends_ns,
    )
    gateway_crds.apply_manifest(
        [inference_pool(aws.name, namespace), inference_pool(gcp.name, backends_ns)]
    )
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])

    with pytest.raises(ReferenceNotPermittedError, match=backends_ns):
        await router.apply({"aws": 40, "gcp": 60})
    refused = await router.read()
    gateway_crds.apply_manifest(
        {
            "apiVersion": f"{GATEWAY_GROUP}/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "routes-to-models", "namespace": backends_ns},
            "spec": {
                "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": namespace}],
                "to": [{"group": INFERENCE_GROUP, "kind": "InferencePool"}],
            },
        }
    )
    applied = await router.apply({"aws": 40, "gcp": 60})

    assert refused.accepted is False
    assert refused.reason == "RefNotPermitted"
    assert applied.writes == 1
    assert live_weights(get_route(gateway_crds, namespace)) == [400_000, 600_000]


async def test_parent_conditions_are_read_back_as_acceptance(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    nobody = await router.read()
    generation = get_route(gateway_crds, namespace)["metadata"]["generation"]

    set_route_status(
        gateway_crds,
        namespace,
        parents=[parent_status(generation=generation, accepted="True", resolved="False")],
    )
    unresolved = await router.read()
    set_route_status(
        gateway_crds,
        namespace,
        parents=[parent_status(generation=generation, accepted="True", resolved="True")],
    )
    accepted = await router.read()
    await router.apply({"aws": 10, "gcp": 90})  # new generation: the gateway has not seen it
    stale = await router.read()

    assert (nobody.accepted, nobody.reason) == (None, "Pending")
    assert (unresolved.accepted, unresolved.reason) == (False, "RefsNotResolved")
    assert "ResolvedRefs=False" in unresolved.message
    assert (accepted.accepted, accepted.reason) == (True, "Accepted")
    assert (stale.accepted, stale.reason) == (None, "Pending")


async def test_route_with_a_backend_that_is_no_placement_is_refused(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    stranger = BackendRef(placement="x", name="canary", port=8000)
    gateway_crds.apply_manifest(service(stranger.name, namespace))
    gateway_crds.apply_manifest(
        route(namespace, rules=[steered_rule([aws, gcp, stranger], weights=[1, 1, 1])])
    )
    router = make_router(kube, namespace, [aws, gcp])

    with pytest.raises(BackendMismatchError, match="canary"):
        await router.apply({"aws": 100, "gcp": 0})
    with pytest.raises(BackendMismatchError):
        await router.read()
    assert live_weights(get_route(gateway_crds, namespace)) == [1, 1, 1]


async def test_only_the_named_rule_is_steered(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(
        route(
            namespace,
            rules=[
                steered_rule([aws, gcp], weights=[1, 1], name="chat"),
                steered_rule([aws, gcp], weights=[4, 6], name="batch"),
            ],
        )
    )
    router = make_router(kube, namespace, [aws, gcp], rule_names=("chat",))

    await router.apply({"aws": 0, "gcp": 100})
    stored = get_route(gateway_crds, namespace)

    assert live_weights(stored, rule_index=0) == [0, 1_000_000]
    assert live_weights(stored, rule_index=1) == [4, 6]


async def test_all_zero_weights_are_never_written(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    version = get_route(gateway_crds, namespace)["metadata"]["resourceVersion"]

    with pytest.raises(InvalidWeightsError):
        await router.apply({"aws": 0, "gcp": 0})

    assert get_route(gateway_crds, namespace)["metadata"]["resourceVersion"] == version


async def test_quick_successive_shifts_lose_no_update(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    router = make_router(kube, namespace, [aws, gcp])
    plans = [{"aws": 100 - step, "gcp": step} for step in range(1, 41)]

    results = await asyncio.gather(*(router.apply(plan) for plan in plans))

    stored = get_route(gateway_crds, namespace)
    assert live_weights(stored) == [600_000, 400_000]  # the last plan: aws 60, gcp 40
    assert sum(result.writes for result in results) == len(plans)
    assert not (await router.read()).drift


async def test_two_routers_racing_leave_a_consistent_route(
    gateway_crds: TestCluster, kube: Any, namespace: str
) -> None:
    aws, gcp = two_services(namespace, gateway_crds)
    gateway_crds.apply_manifest(route(namespace, rules=[steered_rule([aws, gcp])]))
    # Two routers (as during an operator hand-over) do not share a lock; the guards in the
    # patch keep every write whole, so weights and the recorded annotation always agree.
    first = make_router(kube, namespace, [aws, gcp])
    second = make_router(kube, namespace, [aws, gcp])

    plans = {
        "first": [{"aws": 10 + step, "gcp": 90 - step} for step in range(10)],
        "second": [{"aws": 50 + step, "gcp": 50 - step} for step in range(10)],
    }

    async def shifts(router: Any, name: str) -> list[str]:
        outcomes = []
        for plan in plans[name]:
            try:
                await router.apply(plan)
                outcomes.append("applied")
            except RouterConflictError:  # retryable: the next reconcile tries again
                outcomes.append("conflict")
        return outcomes

    outcomes = await asyncio.gather(shifts(first, "first"), shifts(second, "second"))
    stored = get_route(gateway_crds, namespace)
    recorded = json.loads(stored["metadata"]["annotations"][WEIGHTS_ANNOTATION])
    every_plan = [
        [plan["aws"] * 10_000, plan["gcp"] * 10_000] for batch in plans.values() for plan in batch
    ]

    assert recorded == {"aws": live_weights(stored)[0], "gcp": live_weights(stored)[1]}
    assert live_weights(stored) in every_plan
    assert sum(outcome == "applied" for batch in outcomes for outcome in batch) >= 10
    assert not (await first.read()).drift
