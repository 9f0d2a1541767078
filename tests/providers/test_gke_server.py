"""Contract tests: the GKE test server and the official client agree on the wire format."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as google_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import container_v1

from crossfade.testing.gke_server import GKEServer, GKEState, InjectedError

POOL = "projects/demo/locations/us-central1/clusters/serving/nodePools/l4"
LOCATION = "projects/demo/locations/us-central1"


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> GKEState:
    gke = GKEState(clock=clock, operation_duration_s=30)
    gke.add_pool(POOL, zones=("us-central1-a", "us-central1-b"), node_count=1)
    return gke


@pytest.fixture
def client(state: GKEState) -> Iterator[container_v1.ClusterManagerClient]:
    with GKEServer(state) as server:
        yield container_v1.ClusterManagerClient(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=server.endpoint),
        )


def operation_name(operation: container_v1.Operation) -> str:
    return f"{LOCATION}/operations/{operation.name}"


def test_every_request_the_client_sends_parses_as_the_real_request_type(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    client.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=4))
    clock.now += 60
    autoscaling = container_v1.NodePoolAutoscaling(enabled=True, min_node_count=2, max_node_count=9)
    client.set_node_pool_autoscaling(
        request=container_v1.SetNodePoolAutoscalingRequest(name=POOL, autoscaling=autoscaling)
    )
    bodies = [request.body for request in state.requests if request.method == "POST"]
    assert len(bodies) == 2
    size = container_v1.SetNodePoolSizeRequest.from_json(
        json.dumps(bodies[0]), ignore_unknown_fields=False
    )
    scaling = container_v1.SetNodePoolAutoscalingRequest.from_json(
        json.dumps(bodies[1]), ignore_unknown_fields=False
    )
    assert size.node_count == 4
    assert scaling.autoscaling.min_node_count == 2
    assert scaling.autoscaling.max_node_count == 9
    assert [request.path for request in state.requests] == [
        f"/v1/{POOL}:setSize",
        f"/v1/{POOL}:setAutoscaling",
    ]


def test_node_pool_reply_parses_into_the_clients_type_without_a_current_size(
    client: container_v1.ClusterManagerClient,
) -> None:
    pool = client.get_node_pool(request={"name": POOL})
    assert isinstance(pool, container_v1.NodePool)
    assert pool.name == "l4"
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert list(pool.locations) == ["us-central1-a", "us-central1-b"]
    assert pool.initial_node_count == 1
    assert len(pool.instance_group_urls) == 2


async def test_operation_runs_until_the_clock_passes_its_duration(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    started = client.set_node_pool_size(
        request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=3)
    )
    assert started.status == container_v1.Operation.Status.RUNNING
    assert started.operation_type == container_v1.Operation.Type.SET_NODE_POOL_SIZE
    assert client.get_node_pool(request={"name": POOL}).status == (
        container_v1.NodePool.Status.RECONCILING
    )
    assert state.node_count(POOL) == 2
    clock.now += 29
    running = client.get_operation(request={"name": operation_name(started)})
    assert running.status == container_v1.Operation.Status.RUNNING
    clock.now += 1
    done = client.get_operation(request={"name": operation_name(started)})
    assert done.status == container_v1.Operation.Status.DONE
    assert not done.error.message
    assert state.node_count(POOL) == 6  # three per zone, two zones
    assert await state.node_count_source(POOL)() == 6  # what the node simulator follows


def test_second_operation_on_a_busy_pool_is_refused_like_gke(
    client: container_v1.ClusterManagerClient,
) -> None:
    client.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=3))
    with pytest.raises(google_exceptions.BadRequest, match="incompatible operation"):
        client.set_node_pool_size(
            request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=5)
        )


def test_stockout_fails_the_operation_and_sets_a_gce_stockout_condition(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    state.set_stockout(POOL, zone="us-central1-b")
    started = client.set_node_pool_size(
        request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=2)
    )
    clock.now += 30
    done = client.get_operation(request={"name": operation_name(started)})
    assert done.status == container_v1.Operation.Status.DONE
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in done.error.message
    pool = client.get_node_pool(request={"name": POOL})
    assert pool.status == container_v1.NodePool.Status.RUNNING_WITH_ERROR
    assert [c.code for c in pool.conditions] == [container_v1.StatusCondition.Code.GCE_STOCKOUT]
    assert state.node_count(POOL) == 2  # unchanged


def test_quota_exhaustion_sets_a_quota_condition(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    state.set_quota_exhausted(POOL)
    client.set_node_pool_size(request=container_v1.SetNodePoolSizeRequest(name=POOL, node_count=2))
    clock.now += 30
    pool = client.get_node_pool(request={"name": POOL})
    assert [c.code for c in pool.conditions] == [
        container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED
    ]


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (429, google_exceptions.TooManyRequests),
        (403, google_exceptions.Forbidden),
        (503, google_exceptions.ServiceUnavailable),
        (500, google_exceptions.InternalServerError),
    ],
)
def test_injected_errors_reach_the_client_as_its_own_exception_types(
    client: container_v1.ClusterManagerClient,
    state: GKEState,
    status: int,
    exception: type[Exception],
) -> None:
    state.fail_next(InjectedError(status, "injected"))
    with pytest.raises(exception, match="injected"):
        client.get_node_pool(request={"name": POOL}, retry=None)
    assert client.get_node_pool(request={"name": POOL}).name == "l4"  # only once


def test_missing_pool_is_a_not_found(client: container_v1.ClusterManagerClient) -> None:
    with pytest.raises(google_exceptions.NotFound):
        client.get_node_pool(request={"name": POOL.replace("l4", "absent")})


def test_request_with_a_field_the_real_api_lacks_is_rejected(state: GKEState) -> None:
    with GKEServer(state) as server:
        request = urllib.request.Request(
            f"{server.endpoint}/v1/{POOL}:setSize",
            data=json.dumps({"nodeCount": 2, "desiredNodes": 2}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as rejected:
            urllib.request.urlopen(request, timeout=5)
    assert rejected.value.code == 400
    assert "desiredNodes" in rejected.value.read().decode()
