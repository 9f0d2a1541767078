"""Route53 router against a moto server over real HTTP, through a fault-injecting proxy."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossfade.providers.ratelimit import TokenBucket
from crossfade.routers.base import (
    InvalidWeightsError,
    RouteNotFoundError,
    RouterConfigError,
    TrafficRouter,
    WeightsDriftedError,
    to_crossfade_scale,
)
from crossfade.routers.factory import RouterContext, build_routers
from crossfade.routers.route53 import (
    Route53Router,
    Route53ThrottledError,
    build_route53_router,
    make_route53_client,
    route53_target,
    to_route53_weights,
)
from crossfade.testing.aws_faults import Fault, FaultProxy

RouterFactory = Callable[..., Route53Router]


class NoSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Context:
    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients


@pytest.fixture
def zone(moto_server: str, aws_env: None) -> dict[str, str]:
    domain = f"chat-{uuid.uuid4().hex[:6]}.example.com"
    route53 = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_server)
    created = route53.create_hosted_zone(Name=domain, CallerReference=uuid.uuid4().hex)
    return {"id": created["HostedZone"]["Id"].removeprefix("/hostedzone/"), "domain": domain}


DEFAULT_RECORDS = [
    {"placement": "aws-a", "values": ["a.lb.example.net"]},
    {"placement": "gcp-b", "values": ["b.lb.example.net"]},
]


def pool_spec(
    zone: dict[str, str], records: list[dict[str, Any]] | None = None, **route53: Any
) -> dict[str, Any]:
    return {
        "traffic": {
            "route53": {
                "hostedZoneId": zone["id"],
                "recordName": f"api.{zone['domain']}",
                "records": records or DEFAULT_RECORDS,
            }
            | route53
        },
        "placements": [{"name": "aws-a"}, {"name": "gcp-b"}],
    }


@pytest.fixture
def make_router(fault_proxy: FaultProxy, zone: dict[str, str]) -> RouterFactory:
    def make(spec: dict[str, Any] | None = None, **clients: Any) -> Route53Router:
        context = Context({"route53": make_route53_client(endpoint_url=fault_proxy.url)} | clients)
        router = build_route53_router(spec or pool_spec(zone), context)
        router._sleep = NoSleep()  # retries and INSYNC polls return at once
        router._read_cache_ttl_s = 0.0  # every read reaches Route53 (cache: its own test)
        return router

    return make


def live_weights(moto_server: str, zone: dict[str, str]) -> dict[str, int]:
    client = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_server)
    records = client.list_resource_record_sets(HostedZoneId=zone["id"])["ResourceRecordSets"]
    return {r["SetIdentifier"]: r["Weight"] for r in records if "SetIdentifier" in r}


def set_weight(moto_server: str, zone: dict[str, str], *, identifier: str, weight: int) -> None:
    client = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_server)
    client.change_resource_record_sets(
        HostedZoneId=zone["id"],
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": f"api.{zone['domain']}.",
                        "Type": "CNAME",
                        "SetIdentifier": identifier,
                        "Weight": weight,
                        "TTL": 60,
                        "ResourceRecords": [{"Value": f"{identifier}.other.example.net"}],
                    },
                }
            ]
        },
    )


async def test_apply_creates_weighted_records_in_one_batch_and_waits_for_insync(
    make_router: RouterFactory, fault_proxy: FaultProxy, moto_server: str, zone: dict[str, str]
) -> None:
    router = make_router()
    assert isinstance(router, TrafficRouter)
    result = await router.apply({"aws-a": 75, "gcp-b": 25})
    assert result.changed and result.writes == 1 and result.reason == "Synced"
    assert result.layer_weights == {"aws-a": 255, "gcp-b": 85}
    assert live_weights(moto_server, zone) == {"aws-a": 255, "gcp-b": 85}
    [batch] = fault_proxy.requests("ChangeResourceRecordSets")
    assert batch.body.count(b"<Change>") == 2
    assert fault_proxy.requests("GetChange") == []  # moto answered INSYNC right away


async def test_shift_and_read_back(
    make_router: RouterFactory, moto_server: str, zone: dict[str, str]
) -> None:
    router = make_router()
    await router.apply({"aws-a": 100, "gcp-b": 0})
    result = await router.apply({"aws-a": 10, "gcp-b": 90})
    assert result.layer_weights == {"aws-a": 28, "gcp-b": 255}
    reading = await router.read()
    assert reading.weights == {"aws-a": 10, "gcp-b": 90}
    assert reading.accepted is True and not reading.drift
    assert live_weights(moto_server, zone) == {"aws-a": 28, "gcp-b": 255}


async def test_apply_of_held_weights_makes_no_write(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    router = make_router()
    await router.apply({"aws-a": 50, "gcp-b": 50})
    again = await router.apply({"aws-a": 50, "gcp-b": 50})
    assert not again.changed and again.writes == 0
    assert len(fault_proxy.requests("ChangeResourceRecordSets")) == 1


async def test_all_zero_weights_are_refused_without_a_call(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    with pytest.raises(InvalidWeightsError):
        await make_router().apply({"aws-a": 0, "gcp-b": 0})
    assert fault_proxy.requests() == []


async def test_pending_change_is_followed_until_insync(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add(
        Fault(
            kind="rewrite_reply",
            operation="ChangeResourceRecordSets",
            replace=(b"INSYNC", b"PENDING"),
        )
    )
    fault_proxy.add(
        Fault(kind="rewrite_reply", operation="GetChange", times=2, replace=(b"INSYNC", b"PENDING"))
    )
    result = await make_router().apply({"aws-a": 60, "gcp-b": 40})
    assert result.reason == "Synced"
    assert len(fault_proxy.requests("GetChange")) == 3  # two PENDING answers, then INSYNC


async def test_change_still_pending_shows_as_not_yet_accepted(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    router = make_router()
    router._insync_wait_s = 0.0
    fault_proxy.add(
        Fault(
            kind="rewrite_reply",
            operation="ChangeResourceRecordSets",
            replace=(b"INSYNC", b"PENDING"),
        )
    )
    fault_proxy.add(
        Fault(kind="rewrite_reply", operation="GetChange", replace=(b"INSYNC", b"PENDING"))
    )
    result = await router.apply({"aws-a": 60, "gcp-b": 40})
    assert result.reason == "Pending"
    first = await router.read()
    assert first.accepted is None and first.reason == "Pending"
    second = await router.read()
    assert second.accepted is True and second.reason == "Synced"


async def test_drift_is_reported_and_reasserted(
    make_router: RouterFactory, moto_server: str, zone: dict[str, str]
) -> None:
    router = make_router()
    await router.apply({"aws-a": 50, "gcp-b": 50})
    set_weight(moto_server, zone, identifier="aws-a", weight=7)
    reading = await router.read()
    assert reading.drift and reading.reason == "Drifted"
    result = await router.apply({"aws-a": 50, "gcp-b": 50})
    assert result.changed and result.drift_manager == "unknown"
    assert live_weights(moto_server, zone) == {"aws-a": 255, "gcp-b": 255}


async def test_drift_with_back_off_policy_leaves_weights_alone(
    make_router: RouterFactory, moto_server: str, zone: dict[str, str]
) -> None:
    router = make_router(pool_spec(zone, driftPolicy="BackOff"))
    await router.apply({"aws-a": 50, "gcp-b": 50})
    set_weight(moto_server, zone, identifier="gcp-b", weight=1)
    with pytest.raises(WeightsDriftedError):
        await router.apply({"aws-a": 50, "gcp-b": 50})
    assert live_weights(moto_server, zone)["gcp-b"] == 1


async def test_existing_records_get_spec_values_weights_and_health_checks(
    make_router: RouterFactory, moto_server: str, zone: dict[str, str]
) -> None:
    set_weight(moto_server, zone, identifier="aws-a", weight=1)
    set_weight(moto_server, zone, identifier="gcp-b", weight=1)
    records = [
        {"placement": "aws-a", "values": ["aws-a.other.example.net"], "healthCheckId": "hc-aws"},
        {"placement": "gcp-b", "values": ["b.lb.example.net"]},
    ]
    await make_router(pool_spec(zone, records)).apply({"aws-a": 30, "gcp-b": 70})
    client = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_server)
    live = {
        r["SetIdentifier"]: r
        for r in client.list_resource_record_sets(HostedZoneId=zone["id"])["ResourceRecordSets"]
        if "SetIdentifier" in r
    }
    assert live["aws-a"]["ResourceRecords"] == [{"Value": "aws-a.other.example.net"}]
    assert live["aws-a"].get("HealthCheckId") == "hc-aws"
    assert live["gcp-b"]["ResourceRecords"] == [{"Value": "b.lb.example.net"}]
    assert (live["aws-a"]["Weight"], live["gcp-b"]["Weight"]) == (109, 255)


async def test_missing_record_without_values_is_route_not_found(
    make_router: RouterFactory, zone: dict[str, str]
) -> None:
    records = [DEFAULT_RECORDS[0], {"placement": "gcp-b", "values": []}]
    with pytest.raises(RouteNotFoundError, match="gcp-b"):
        await make_router(pool_spec(zone, records)).apply({"aws-a": 50, "gcp-b": 50})


async def test_missing_zone_is_route_not_found(
    make_router: RouterFactory, zone: dict[str, str]
) -> None:
    spec = pool_spec(zone | {"id": "ZNOSUCHZONE"})
    with pytest.raises(RouteNotFoundError):
        await make_router(spec).read()


async def test_transient_throttle_is_retried_and_persistent_one_reported(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    router = make_router()
    fault_proxy.add(Fault(kind="throttle", operation="ChangeResourceRecordSets", times=1))
    result = await router.apply({"aws-a": 50, "gcp-b": 50})
    assert result.changed
    assert [r.status for r in fault_proxy.requests("ChangeResourceRecordSets")] == [400, 200]
    fault_proxy.add(Fault(kind="throttle", operation="ListResourceRecordSets", times=99))
    with pytest.raises(Route53ThrottledError) as caught:
        await router.read()
    assert caught.value.code == "Throttling" and caught.value.retryable
    assert caught.value.reason == "Throttled"


async def test_empty_client_bucket_reports_throttled_without_calling_aws(
    make_router: RouterFactory, fault_proxy: FaultProxy
) -> None:
    ticks = iter([0.0] * 100)
    bucket = TokenBucket(rate_per_s=0.01, burst=1, clock=lambda: next(ticks))
    router = make_router(route53_limiter=bucket)
    await router.read()  # spends the only token
    with pytest.raises(Route53ThrottledError) as caught:
        await router.read()
    assert caught.value.code == "ClientRateLimited"
    assert len(fault_proxy.requests("ListResourceRecordSets")) == 1


def test_target_reads_the_api_shape_and_rejects_gaps() -> None:
    with pytest.raises(RouterConfigError):
        route53_target({"traffic": {"route53": {"recordName": "x"}}, "placements": [{"name": "a"}]})
    section = {"hostedZoneId": "/hostedzone/Z1", "recordName": "api.x.com", "maxWeight": 100}
    one = [{"placement": "a", "setIdentifier": "sa", "values": ["1.2.3.4"]}]
    target = route53_target(
        {
            "traffic": {"route53": section | {"records": one, "type": "A"}},
            "placements": [{"name": "a"}],
        }
    )
    assert (target.hosted_zone_id, target.fqdn, target.record_type) == ("Z1", "api.x.com.", "A")
    assert target.max_weight == 100 and target.ttl_s == 60
    assert target.placements[0].set_identifier == "sa"
    assert target.placements[0].values == ("1.2.3.4",)
    with pytest.raises(RouterConfigError, match="no record for placement b"):
        route53_target(
            {
                "traffic": {"route53": section | {"records": one}},
                "placements": [{"name": "a"}, {"name": "b"}],
            }
        )
    with pytest.raises(RouterConfigError, match="unknown placements: z"):
        route53_target(
            {
                "traffic": {
                    "route53": section | {"records": [*one, {"placement": "z", "values": ["x"]}]}
                },
                "placements": [{"name": "a"}],
            }
        )


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]), st.integers(min_value=0, max_value=100), min_size=1
    ).filter(lambda w: sum(w.values()) > 0),
    st.integers(min_value=1, max_value=255),
)
def test_route53_weights_keep_ratios_and_never_lose_a_share(
    weights: dict[str, int], max_weight: int
) -> None:
    layer = to_route53_weights(weights, max_weight=max_weight)
    assert max(layer.values()) == max_weight
    assert all(0 <= value <= max_weight for value in layer.values())
    assert all((layer[name] > 0) == (weights[name] > 0) for name in weights)
    if max_weight == 255:
        back = to_crossfade_scale(layer)
        exact = to_crossfade_scale(weights)
        assert all(abs(back[name] - exact[name]) <= 1 for name in weights)


async def test_reads_are_cached_at_steady_state(
    make_router: RouterFactory, fault_proxy: FaultProxy, moto_server: str, zone: dict[str, str]
) -> None:
    now = [0.0]
    router = make_router()
    router._read_cache_ttl_s = 30.0
    router._clock = lambda: now[0]
    await router.apply({"aws-a": 50, "gcp-b": 50})
    lists_after_apply = len(fault_proxy.requests("ListResourceRecordSets"))
    assert (await router.apply({"aws-a": 50, "gcp-b": 50})).writes == 0  # the same plan again
    for _ in range(12):  # two minutes of reconciles every 10 s
        reading = await router.read()
        now[0] += 10
    assert reading.weights == {"aws-a": 50, "gcp-b": 50}
    # The apply primed the cache; it then expires at 30, 60 and 90 s: 2 lists a minute.
    assert len(fault_proxy.requests("ListResourceRecordSets")) - lists_after_apply == 3
    set_weight(moto_server, zone, identifier="aws-a", weight=3)
    now[0] += 30
    assert (await router.read()).drift  # seen once the cache expired


async def test_the_router_factory_builds_route53_from_a_pool_spec(
    fault_proxy: FaultProxy, zone: dict[str, str], moto_server: str
) -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=4)
    context = RouterContext(
        pool_namespace="serving",
        pool_name="chat",
        clients={
            "route53": make_route53_client(endpoint_url=fault_proxy.url),
            "route53_limiter": bucket,
        },
    )
    [router] = build_routers(spec=pool_spec(zone), context=context)
    assert isinstance(router, Route53Router) and router.name.startswith(f"route53/{zone['id']}/")
    before = await router.read()
    assert before.weights is None and before.reason == "RecordsNotCreated"
    await router.apply({"aws-a": 100, "gcp-b": 0})
    assert live_weights(moto_server, zone) == {"aws-a": 255, "gcp-b": 0}
    assert bucket.tokens < 4  # the calls drew from the shared bucket
