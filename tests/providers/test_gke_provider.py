"""GKE provider against the local GKE REST server through the official client (REST transport)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import RefreshError
from google.cloud import container_v1

from crossfade.providers.base import CapacityProvider
from crossfade.providers.errors import (
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    Throttled,
    UpdateInProgress,
)
from crossfade.providers.gke import GKENodePoolProvider, GKENodePoolRef, make_client
from crossfade.testing.gke_server import GKEServer, GKEState, InjectedError

FIXED = GKENodePoolRef("demo", "us-central1", "serving", "l4-fixed")
AUTOSCALED = GKENodePoolRef("demo", "us-central1", "serving", "l4-auto")
OPERATION_S = 30.0


class ManualClock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> GKEState:
    gke = GKEState(clock=clock, operation_duration_s=OPERATION_S)
    gke.add_pool(FIXED.name, zones=("us-central1-a",), node_count=1)
    gke.add_pool(AUTOSCALED.name, zones=("us-central1-a", "us-central1-b"), autoscaling=(0, 4))
    return gke


@pytest.fixture
def server(state: GKEState) -> Iterator[GKEServer]:
    with GKEServer(state) as running:
        yield running


def provider(
    server: GKEServer,
    clock: ManualClock,
    ref: GKENodePoolRef = FIXED,
    *,
    operation_wait_s: float = 2 * OPERATION_S,
) -> GKENodePoolProvider:
    return GKENodePoolProvider(
        ref=ref,
        client=make_client(endpoint=server.endpoint, credentials=AnonymousCredentials()),
        max_nodes=8,
        operation_wait_s=operation_wait_s,
        sleep=clock.sleep,
        clock=clock,
    )


def posts(state: GKEState) -> list[str]:
    return [request.path for request in state.requests if request.method == "POST"]


def test_the_provider_satisfies_the_protocol(server: GKEServer, clock: ManualClock) -> None:
    assert isinstance(provider(server, clock), CapacityProvider)
    assert provider(server, clock).name == "gke/demo/serving/l4-fixed"


async def test_describe_fixed_pool_reports_initial_size_and_no_readiness(
    server: GKEServer, clock: ManualClock
) -> None:
    described = await provider(server, clock).describe()
    assert (described.desired, described.min_size, described.max_size) == (1, 0, 8)
    assert described.ready is None
    assert described.status == "RUNNING"
    assert not described.updating
    assert described.health_issues == ()


async def test_scale_fixed_pool_waits_for_the_operation_and_resizes(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    gke = provider(server, clock)
    result = await gke.scale(desired=3, token="t1")
    assert result.changed and not result.in_progress
    assert (result.desired, result.previous, result.writes) == (3, 1, 1)
    assert result.update_id and result.update_id.startswith("operation-")
    assert state.node_count(FIXED.name) == 3
    assert (await gke.describe()).desired == 3


async def test_scale_returns_in_progress_when_the_operation_outlasts_the_wait(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    gke = provider(server, clock, operation_wait_s=5.0)
    result = await gke.scale(desired=2, token="t1")
    assert result.in_progress
    during = await gke.describe()
    assert during.updating and during.status == "RECONCILING" and during.desired == 2
    clock.now += OPERATION_S
    after = await gke.describe()
    assert not after.updating and after.status == "RUNNING"
    assert state.node_count(FIXED.name) == 2


async def test_same_token_or_same_size_makes_no_second_write(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    gke = provider(server, clock)
    await gke.scale(desired=2, token="t1")
    again = await gke.scale(desired=2, token="t1")
    same_size = await gke.scale(desired=2, token="t2")
    assert not again.changed and not same_size.changed
    assert posts(state) == [f"/v1/{FIXED.name}:setSize"]


async def test_autoscaled_pool_is_scaled_through_its_floor_across_zones(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    gke = provider(server, clock, ref=AUTOSCALED)
    before = await gke.describe()
    assert (before.desired, before.min_size, before.max_size) == (0, 0, 8)
    result = await gke.scale(desired=3, token="t1")  # two zones: rounded up to 2 per zone
    assert result.desired == 4
    after = await gke.describe()
    assert (after.desired, after.min_size, after.max_size) == (4, 4, 8)
    assert state.node_count(AUTOSCALED.name) == 4
    body = next(r.body for r in state.requests if r.method == "POST")
    parsed = container_v1.SetNodePoolAutoscalingRequest.from_json(
        json.dumps(body), ignore_unknown_fields=False
    )
    assert parsed.autoscaling.enabled
    assert (parsed.autoscaling.min_node_count, parsed.autoscaling.max_node_count) == (2, 4)


async def test_desired_above_the_maximum_is_an_invalid_request_without_a_write(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    with pytest.raises(InvalidRequest, match="exceeds"):
        await provider(server, clock, ref=AUTOSCALED).scale(desired=9, token="t1")
    assert posts(state) == []


async def test_stockout_raises_insufficient_capacity_and_shows_in_health(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    state.set_stockout(FIXED.name, zone="us-central1-a")
    gke = provider(server, clock)
    with pytest.raises(InsufficientCapacity) as raised:
        await gke.scale(desired=4, token="t1")
    assert raised.value.code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert not raised.value.retryable
    described = await gke.describe()
    assert described.insufficient_capacity
    assert [issue.code for issue in described.health_issues] == ["GCE_STOCKOUT"]
    assert described.status == "RUNNING_WITH_ERROR"


async def test_quota_exhaustion_counts_as_insufficient_capacity(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    state.set_quota_exhausted(FIXED.name)
    gke = provider(server, clock)
    with pytest.raises(InsufficientCapacity):
        await gke.scale(desired=4, token="t1")
    assert [i.code for i in (await gke.describe()).health_issues] == ["GCE_QUOTA_EXCEEDED"]


@pytest.mark.parametrize(
    ("injected", "expected"),
    [
        (InjectedError(429, "Quota exceeded for quota metric 'Read requests'"), Throttled),
        (InjectedError(403, "Required 'container.nodePools.get' permission"), PermissionDenied),
        (InjectedError(503, "The service is currently unavailable."), ProviderUnavailable),
        (InjectedError(500, "Internal error."), ProviderUnavailable),
        (InjectedError(400, "Invalid value for field 'nodeCount'"), InvalidRequest),
    ],
)
async def test_api_errors_map_onto_typed_errors(
    server: GKEServer,
    state: GKEState,
    clock: ManualClock,
    injected: InjectedError,
    expected: type[ProviderError],
) -> None:
    state.fail_next(injected)
    with pytest.raises(expected) as raised:
        await provider(server, clock).describe()
    assert type(raised.value) is expected
    assert injected.message in raised.value.message


async def test_busy_pool_is_update_in_progress(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    await provider(server, clock, operation_wait_s=0).scale(desired=2, token="t1")
    with pytest.raises(UpdateInProgress) as raised:
        await provider(server, clock).scale(desired=3, token="t2")  # another operator replica
    assert raised.value.retryable


async def test_missing_pool_is_not_found(server: GKEServer, clock: ManualClock) -> None:
    absent = GKENodePoolRef("demo", "us-central1", "serving", "absent")
    with pytest.raises(NotFound):
        await provider(server, clock, ref=absent).describe()
    with pytest.raises(NotFound):
        await provider(server, clock, ref=absent).scale(desired=1, token="t")


async def test_unreachable_api_is_provider_unavailable(clock: ManualClock) -> None:
    stopped = GKEServer(GKEState()).start()
    stopped.stop()
    with pytest.raises(ProviderUnavailable):
        await provider(stopped, clock).describe()


async def test_every_request_the_provider_sends_parses_as_the_real_request_type(
    server: GKEServer, state: GKEState, clock: ManualClock
) -> None:
    await provider(server, clock).scale(desired=2, token="a")
    await provider(server, clock, ref=AUTOSCALED).scale(desired=2, token="b")
    request_types = {
        "setSize": container_v1.SetNodePoolSizeRequest,
        "setAutoscaling": container_v1.SetNodePoolAutoscalingRequest,
    }
    seen = set()
    for request in state.requests:
        if request.method == "POST":
            verb = request.path.rsplit(":", 1)[-1]
            request_types[verb].from_json(json.dumps(request.body), ignore_unknown_fields=False)
            seen.add(verb)
        else:
            assert "/nodePools/" in request.path or "/operations/" in request.path
    assert seen == set(request_types)


class RefusedCredentials(Credentials):  # type: ignore[misc]
    """Credentials whose token refresh is refused, as an expired federation config would be."""

    def refresh(self, request: object) -> None:
        raise RefreshError("invalid_grant: the identity pool token has expired")


async def test_refused_credentials_are_permission_denied_not_an_sdk_error(
    server: GKEServer, clock: ManualClock
) -> None:
    gke = GKENodePoolProvider(
        ref=FIXED,
        client=make_client(endpoint=server.endpoint, credentials=RefusedCredentials()),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(PermissionDenied) as denied:
        await gke.describe()
    assert denied.value.code == "CredentialsRefreshFailed"
    assert "invalid_grant" in denied.value.message


async def test_registry_built_providers_share_one_client_and_outlive_a_siblings_close(
    server: GKEServer, state: GKEState
) -> None:
    """One client per process, not per placement (memory per pool); a pool's close keeps it."""
    from crossfade.providers import gke as gke_module
    from crossfade.providers.registry import ProviderContext

    context = ProviderContext(gke_endpoint=server.endpoint, gke_credentials=AnonymousCredentials())

    def placement(ref: GKENodePoolRef) -> dict[str, object]:
        member = {
            "project": ref.project,
            "location": ref.location,
            "cluster": ref.cluster,
            "nodePool": ref.node_pool,
        }
        return {"name": ref.node_pool, "provider": {"type": "GKENodePool", "gkeNodePool": member}}

    fixed = gke_module.build(placement(FIXED), context)
    autoscaled = gke_module.build(placement(AUTOSCALED), context)
    assert fixed._client is autoscaled._client
    assert fixed._client is gke_module.shared_client(
        endpoint=server.endpoint, credentials=context.gke_credentials
    )
    await fixed.aclose()
    described = await autoscaled.describe()
    assert described.status == "RUNNING"
    assert [request.path for request in state.requests][-1].endswith("/nodePools/l4-auto")
