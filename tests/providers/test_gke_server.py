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


CLUSTER = "projects/demo/locations/us-central1/clusters/serving"


def _create_request(name: str, machine_type: str) -> container_v1.CreateNodePoolRequest:
    return container_v1.CreateNodePoolRequest(
        parent=CLUSTER,
        node_pool=container_v1.NodePool(
            name=name,
            initial_node_count=1,
            locations=["us-central1-a"],
            config=container_v1.NodeConfig(
                machine_type=machine_type,
                labels={"crossfade.dev/workload": "inference"},
                resource_labels={"crossfade-dev_pool": "llama"},
                taints=[
                    container_v1.NodeTaint(
                        key="nvidia.com/gpu",
                        value="present",
                        effect=container_v1.NodeTaint.Effect.NO_SCHEDULE,
                    )
                ],
            ),
        ),
    )


def test_node_pool_create_get_list_and_delete_round_trip_through_the_client(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    operation = client.create_node_pool(request=_create_request("gpu", "g2-standard-8"))
    assert operation.operation_type == container_v1.Operation.Type.CREATE_NODE_POOL
    assert operation.status == container_v1.Operation.Status.RUNNING
    [create] = [r for r in state.requests if r.method == "POST"]
    parsed = container_v1.CreateNodePoolRequest.from_json(
        json.dumps(create.body), ignore_unknown_fields=False
    )
    assert parsed.node_pool.config.machine_type == "g2-standard-8"
    assert create.path == f"/v1/{CLUSTER}/nodePools"
    pool_name = f"{CLUSTER}/nodePools/gpu"
    provisioning = client.get_node_pool(request={"name": pool_name})
    assert provisioning.status == container_v1.NodePool.Status.PROVISIONING
    clock.now += 30
    done = client.get_operation(request={"name": operation_name(operation)})
    assert done.status == container_v1.Operation.Status.DONE and not done.error.message
    pool = client.get_node_pool(request={"name": pool_name})
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert pool.config.labels["crossfade.dev/workload"] == "inference"
    assert pool.config.resource_labels["crossfade-dev_pool"] == "llama"
    assert pool.config.taints[0].effect == container_v1.NodeTaint.Effect.NO_SCHEDULE
    listed = client.list_node_pools(request={"parent": CLUSTER})
    assert sorted(p.name for p in listed.node_pools) == ["gpu", "l4"]
    with pytest.raises(google_exceptions.Conflict):
        client.create_node_pool(request=_create_request("gpu", "g2-standard-8"))
    deleting = client.delete_node_pool(request={"name": pool_name})
    assert deleting.operation_type == container_v1.Operation.Type.DELETE_NODE_POOL
    clock.now += 30
    with pytest.raises(google_exceptions.NotFound):
        client.get_node_pool(request={"name": pool_name})


def test_stocked_out_machine_type_fails_the_create_operation_and_leaves_an_error_pool(
    client: container_v1.ClusterManagerClient, state: GKEState, clock: ManualClock
) -> None:
    state.set_machine_type_stockout("a3-highgpu-8g")
    operation = client.create_node_pool(request=_create_request("h100", "a3-highgpu-8g"))
    clock.now += 30
    done = client.get_operation(request={"name": operation_name(operation)})
    assert done.status == container_v1.Operation.Status.DONE
    assert "ZONE_RESOURCE_POOL_EXHAUSTED" in done.error.message
    pool = client.get_node_pool(request={"name": f"{CLUSTER}/nodePools/h100"})
    assert pool.status == container_v1.NodePool.Status.ERROR
    assert [c.code for c in pool.conditions] == [container_v1.StatusCondition.Code.GCE_STOCKOUT]
