"""The operator's router clients honour CROSSFADE_AWS_ENDPOINT_URL, like the EKS providers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import boto3
import pytest

from crossfade.handlers.process import router_clients
from crossfade.providers.registry import AWS_ENDPOINT_ENV, ProviderContext
from crossfade.routers.route53 import build_route53_router
from tests.support.moto_server import aws_env, moto_server

__all__ = ["aws_env", "moto_server"]


class RouterContext:
    def __init__(self, clients: Mapping[str, Any]) -> None:
        self.clients = clients


async def test_route53_router_of_the_operator_talks_to_the_configured_aws_endpoint(
    moto_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AWS_ENDPOINT_ENV, moto_server)
    moto = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_server)
    domain = f"chat-{uuid.uuid4().hex[:6]}.example.com"
    zone = moto.create_hosted_zone(Name=domain, CallerReference=uuid.uuid4().hex)
    zone_id = zone["HostedZone"]["Id"].removeprefix("/hostedzone/")
    spec = {
        "traffic": {
            "route53": {
                "hostedZoneId": zone_id,
                "recordName": f"api.{domain}",
                "records": [
                    {"placement": "aws-a", "values": ["a.lb.example.net"]},
                    {"placement": "gcp-b", "values": ["b.lb.example.net"]},
                ],
            }
        },
        "placements": [{"name": "aws-a"}, {"name": "gcp-b"}],
    }

    clients = router_clients(ProviderContext.from_environment())
    router = build_route53_router(spec, RouterContext(clients))

    # Checked before any call, so a regression fails here instead of reaching real AWS.
    assert router._client.meta.endpoint_url == moto_server
    await router.apply({"aws-a": 75, "gcp-b": 25})
    records = moto.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    weights = {r["SetIdentifier"]: r["Weight"] for r in records if "SetIdentifier" in r}
    assert weights == {"aws-a": 255, "gcp-b": 85}


def test_routers_of_every_pool_share_one_route53_client(
    moto_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AWS_ENDPOINT_ENV, moto_server)
    clients = router_clients(ProviderContext.from_environment())
    routers = [
        build_route53_router(
            {
                "traffic": {
                    "route53": {
                        "hostedZoneId": f"Z{n}",
                        "recordName": f"api{n}.example.com",
                        "records": [{"placement": "aws-a", "values": ["a.lb.example.net"]}],
                    }
                },
                "placements": [{"name": "aws-a"}],
            },
            RouterContext(clients),
        )
        for n in range(3)
    ]
    assert {id(router._client) for router in routers} == {id(clients["route53"])}


def test_the_route53_client_is_built_by_the_first_route53_router_only(
    moto_server: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pools routing only through the Gateway API never pay for the Route53 client."""
    monkeypatch.setenv(AWS_ENDPOINT_ENV, moto_server)
    fresh = router_clients(ProviderContext.from_environment())
    assert fresh["aws_endpoint_url"] == moto_server
    assert fresh["route53_limiter"] is fresh["route53_limiter"]
    built_before_a_router = fresh.route53_built
    router = build_route53_router(
        {
            "traffic": {
                "route53": {
                    "hostedZoneId": "Z1",
                    "recordName": "api.example.com",
                    "records": [{"placement": "aws-a", "values": ["a.lb.example.net"]}],
                }
            },
            "placements": [{"name": "aws-a"}],
        },
        RouterContext(fresh),
    )
    assert (built_before_a_router, fresh.route53_built) == (False, True)
    assert router._client is fresh["route53"]
