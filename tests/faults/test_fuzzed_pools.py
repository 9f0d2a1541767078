"""Hostile InferencePool bodies (hypothesis) through the real apiserver, then the operator.

(a) Each body is created on the real apiserver (dryRun=All: validated, defaulted and
    answered exactly as a create, not stored): it is either accepted, or refused with a
    reason that names the field (422 with causes carrying field paths, or a 400 strict
    decoding error naming the unknown field). Never a 5xx, never a refusal without a field.
(b) Up to OPERATOR_POOLS of the accepted bodies, as the apiserver defaulted them, are then
    created for real and handed to the operator process (its kopf handlers and per-pool
    loops): every pool ends up with a Ready condition, pools the operator itself judges
    unusable get Ready=False InvalidSpec and an InvalidSpec Event, and no exception escapes
    a handler (kopf logs those with a traceback), no crash. The cap keeps this a test of
    bad input, not of how many pools one replica starts at once on a shared test machine.

Derandomized with a fixed example count, so CI replays the same bodies (tests/conftest.py
``ci`` profile); CROSSFADE_FUZZ_EXAMPLES raises the count for a longer local search.
Malformed kubeconfig Secrets: test_bad_kubeconfig.py; hostile probe answers (huge bodies,
slow drip, garbage, resets): tests/probes.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client

from crossfade.handlers.pools import invalid_spec_reason
from crossfade.testing.controlplane import TestCluster
from tests.api.kube import PoolClient, create_namespace
from tests.e2e.world import GROUP, PLURAL, VERSION, OperatorProcess, eventually, gke_test_server
from tests.faults.hostile_pools import hostile_pools

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

MAX_EXAMPLES = int(os.environ.get("CROSSFADE_FUZZ_EXAMPLES", "150"))
OPERATOR_POOLS = 10
HANDLED_TIMEOUT_S = 180.0
MIN_ACCEPTED = 10
MIN_REFUSED = 10
FIELD_PATH = re.compile(r"^(spec|metadata)\b")
UNKNOWN_FIELD = re.compile(r'strict decoding error: unknown field "(spec|metadata)\.')
# A handler exception is logged by kopf with one of these, and with a traceback.
HANDLER_FAILURE = re.compile(r"failed with an exception|Traceback")

ACCEPTED: list[dict[str, Any]] = []
OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_namespace(e2e_crds: TestCluster) -> str:
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    create_namespace(e2e_crds, name)
    return name


@pytest.fixture(scope="module")
def fuzz_pools(e2e_crds: TestCluster, fuzz_namespace: str) -> PoolClient:
    return PoolClient(e2e_crds, fuzz_namespace)


def refusal_problem(status: int, body: dict[str, Any]) -> str | None:
    """Why a refusal is not a clear one (None when it names the offending field)."""
    if status == 422:
        causes = (body.get("details") or {}).get("causes") or []
        if any(FIELD_PATH.match(str(c.get("field", ""))) for c in causes):
            return None
        return f"422 without a field path: {body.get('message')!r:.300}"
    if status == 400 and UNKNOWN_FIELD.search(str(body.get("message", ""))):
        return None
    return f"{status}: {body.get('message')!r:.300}"


@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=hostile_pools())
def test_apiserver_stores_or_names_the_bad_field(
    fuzz_pools: PoolClient, body: dict[str, Any]
) -> None:
    body["metadata"]["name"] = f"fuzz-{sum(OUTCOMES.values()):04d}"
    reply = fuzz_pools.dry_run_create(body)
    if reply.ok:
        OUTCOMES["accepted"] += 1
        ACCEPTED.append(reply.body)
        return
    OUTCOMES[f"refused-{reply.status}"] += 1
    problem = refusal_problem(reply.status, reply.body)
    assert problem is None, f"{problem}\n{json.dumps(body)[:2000]}"


@pytest.fixture
def fuzz_operator(
    e2e_crds: TestCluster,
    fuzz_namespace: str,
    moto_server: str,
    aws_env: None,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    with gke_test_server() as gke:
        op = OperatorProcess(
            kubeconfig=e2e_crds.kubeconfig_path,
            namespace=fuzz_namespace,
            log_path=tmp_path / "operator.log",
            env={
                **os.environ,
                "CROSSFADE_AWS_ENDPOINT_URL": moto_server,
                # Every boto3 client of the process, the Route53 router's included, to moto.
                "AWS_ENDPOINT_URL": moto_server,
                "CROSSFADE_GKE_ENDPOINT": gke.endpoint,
            },
        ).start()
        try:
            yield op
        finally:
            op.stop()
            print(f"\n--- fuzz operator log tail ---\n{op.log_tail(30)}")


def stored_pools(cluster: TestCluster, namespace: str) -> dict[str, dict[str, Any]]:
    with cluster.api_client() as api:
        listing: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL
        )
    items = listing["items"]
    return {item["metadata"]["name"]: item for item in items}


def ready_condition(pool: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (pool.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return dict(condition)
    return None


def invalid_spec_events(cluster: TestCluster, namespace: str) -> set[str]:
    with cluster.api_client() as api:
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    return {str(e.involved_object.name) for e in events if e.reason == "InvalidSpec"}


def spread(items: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` items spread evenly over ``items`` (hypothesis starts with the simplest)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


async def test_operator_handles_every_accepted_pool_without_an_escaping_exception(
    e2e_crds: TestCluster,
    fuzz_namespace: str,
    fuzz_pools: PoolClient,
    fuzz_operator: OperatorProcess,
) -> None:
    # Runs after the property in file order, on what the apiserver accepted.
    assert OUTCOMES["accepted"] >= MIN_ACCEPTED, OUTCOMES
    assert sum(n for k, n in OUTCOMES.items() if k.startswith("refused")) >= MIN_REFUSED, OUTCOMES
    names = set()
    for accepted in spread(ACCEPTED, OPERATOR_POOLS):
        stored = fuzz_pools.create(
            {k: v for k, v in accepted.items() if k != "metadata"}
            | {"metadata": {"name": accepted["metadata"]["name"]}}
        )
        assert stored.ok, stored.body
        names.add(accepted["metadata"]["name"])
    await fuzz_operator.wait_ready()

    def unhandled() -> dict[str, Any]:
        pools = stored_pools(e2e_crds, fuzz_namespace)
        return {n: pools[n] for n in names if ready_condition(pools[n]) is None}

    try:
        await eventually(
            lambda: not unhandled(),
            timeout_s=HANDLED_TIMEOUT_S,
            what="a Ready condition on every pool",
            interval_s=1.0,
        )
    except AssertionError:
        left = {n: {"spec": p["spec"], "status": p.get("status")} for n, p in unhandled().items()}
        raise AssertionError(
            f"{len(left)} of {len(names)} pools got no Ready condition: {json.dumps(left)[:6000]}"
        ) from None
    pools = stored_pools(e2e_crds, fuzz_namespace)
    judged_invalid = {n for n in names if invalid_spec_reason(pools[n]["spec"]) is not None}
    reasons = Counter(str((ready_condition(pools[n]) or {}).get("reason")) for n in names)
    summary = {
        "examples": sum(OUTCOMES.values()),
        **OUTCOMES,
        "handed_to_operator": len(names),
        "operator_judged_invalid": len(judged_invalid),
        "ready_reasons": dict(reasons),
    }
    print(f"\n[faults] fuzzed pools: {json.dumps(summary)}")
    for name in judged_invalid:
        condition = ready_condition(pools[name]) or {}
        assert (condition.get("status"), condition.get("reason")) == ("False", "InvalidSpec"), (
            name,
            condition,
        )
    assert judged_invalid <= invalid_spec_events(e2e_crds, fuzz_namespace)
    assert fuzz_operator.alive(), fuzz_operator.log_tail()
    failures = HANDLER_FAILURE.findall(fuzz_operator.log_path.read_text(errors="replace"))
    assert not failures, fuzz_operator.log_tail(80)
