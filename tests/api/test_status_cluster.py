"""Status through the real subresource: the models' output is stored intact; printer columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crossfade.api import (
    Condition,
    ConditionStatus,
    HistoryEntry,
    InferencePoolStatus,
    PlacementHealth,
    PlacementStatus,
    parse_pool,
)
from tests.api.kube import PoolClient
from tests.api.samples import base_pool

pytestmark = pytest.mark.cluster

FAILOVER_AT = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


def _status() -> InferencePoolStatus:
    return InferencePoolStatus(
        observed_generation=1,
        active_placement="gke",
        preferred_placement="aws",
        healthy_placements="1/2",
        last_failover_time=FAILOVER_AT,
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.TRUE,
                observed_generation=1,
                last_transition_time=FAILOVER_AT,
                reason="ServingFromStandby",
                message="gke serves 100%",
            ),
            Condition(
                type="Degraded",
                status=ConditionStatus.TRUE,
                last_transition_time=FAILOVER_AT,
                reason="PreferredUnhealthy",
                message="aws: inference probe failing",
            ),
        ],
        placements=[
            PlacementStatus(
                name="aws",
                health=PlacementHealth.UNHEALTHY,
                reason="ProbeFailing",
                desired_nodes=2,
                ready_nodes=0,
                consecutive_failures=4,
                provider_error="InsufficientCapacity",
                weight=0,
            ),
            PlacementStatus(
                name="gke",
                health=PlacementHealth.HEALTHY,
                ready_nodes=2,
                allocatable_accelerators=16,
                latency_milliseconds=180,
                weight=100,
                last_transition_time=FAILOVER_AT,
            ),
        ],
        history=[
            HistoryEntry(
                time=FAILOVER_AT,
                from_placement="aws",
                to_placement="gke",
                reason="FailedOver",
                message="aws unhealthy for 30 s",
                duration_seconds=42,
            )
        ],
    )


@pytest.fixture(scope="module")
def pool_with_status(pools: PoolClient) -> str:
    name = "with-status"
    created = pools.create(base_pool(name))
    assert created.ok, created.message
    patched = pools.merge_patch(name, {"status": _status().to_wire()}, subresource="status")
    assert patched.ok, patched.message
    return name


def test_status_written_by_the_models_is_stored_unpruned(
    pools: PoolClient, pool_with_status: str
) -> None:
    stored = pools.get(pool_with_status)
    assert stored.ok, stored.message
    assert stored.body["status"] == _status().to_wire()
    assert parse_pool(stored.body).status == _status()


def test_status_rejects_fields_outside_the_schema(pools: PoolClient, pool_with_status: str) -> None:
    reply = pools.merge_patch(
        pool_with_status, {"status": {"kopf": {"progress": {}}}}, subresource="status"
    )
    assert not reply.ok
    assert 'unknown field "status.kopf"' in reply.message, reply.message


def test_printer_columns_through_the_table_api(pools: PoolClient, pool_with_status: str) -> None:
    reply = pools.table()
    assert reply.ok, reply.message
    assert reply.body["kind"] == "Table"
    columns = [c["name"] for c in reply.body["columnDefinitions"]]
    assert columns == ["Name", "Active", "Ready", "Degraded", "Healthy", "LastFailover", "Age"]
    rows = {row["cells"][0]: row["cells"] for row in reply.body["rows"]}
    cells = dict(zip(columns, rows[pool_with_status], strict=True))
    assert cells["Active"] == "gke"
    assert cells["Ready"] == "True"
    assert cells["Degraded"] == "True"
    assert cells["Healthy"] == "1/2"
    # Date columns are rendered as ages (e.g. "3y"), never as the raw timestamp.
    assert cells["LastFailover"] not in {"", None, "2026-11-26T12:30:00Z"}


def test_discovery_offers_short_name_and_category(pools: PoolClient) -> None:
    reply = pools.request("GET", f"{pools.cluster.server}/apis/crossfade.dev/v1alpha1")
    assert reply.ok, reply.message
    resource = next(r for r in reply.body["resources"] if r["name"] == "inferencepools")
    assert resource["shortNames"] == ["cfpool"]
    assert resource["categories"] == ["crossfade"]
    assert resource["namespaced"] is True
