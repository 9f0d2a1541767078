"""AWS API calls per pool per minute, at steady state and during a failover (moto over HTTP).

One pool with two EKS placements (aws-a, aws-b) and a Route53 weighted record set; a fake
clock drives reconciles every PERIOD_S seconds. Each reconcile reads the node groups the
way the operator's cloud observer does: ``CloudProbe`` (circuit breaker) over
``InstrumentedProvider`` over the EKS provider, so a wrapper that bypassed the provider's
describe cache would show here. Every call is counted on the wire by the fault proxy in
front of a moto server, so the figures include retries.

Goals (issue 6): steady state <= 2 describe calls per placement per minute with
periodSeconds 10 and zero writes; a failover <= 3 write calls in total.

A second table scales the measured per-pool rates to FLEET_POOLS pools in one account and
sets them beside AWS's published request limits (LIMITS, with the page each comes from) and
beside crossfade's own client-side token buckets (``crossfade.providers.ratelimit``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import boto3
from moto.server import ThreadedMotoServer

from bench.common import markdown_table, spread, write_results
from crossfade.probes.breaker import CircuitBreaker
from crossfade.probes.cloud import CloudProbe
from crossfade.providers.aws_api import AutoScalingApi, EksApi
from crossfade.providers.aws_eks import EksNodeGroupProvider, EksNodeGroupRef
from crossfade.providers.base import idempotency_token
from crossfade.providers.instrumented import InstrumentedProvider, ProviderMetrics
from crossfade.providers.ratelimit import DEFAULT_BUCKETS, RateLimiters
from crossfade.routers.route53 import build_route53_router, make_route53_client
from crossfade.testing import moto_state
from crossfade.testing.aws_faults import FaultProxy

PERIOD_S = 10
STEADY_MINUTES = 10
FAILOVER_MINUTES = 2
REGION = "us-east-1"
PLACEMENTS = ("aws-a", "aws-b")
WRITE_OPERATIONS = frozenset({"UpdateNodegroupConfig", "ChangeResourceRecordSets"})
DESCRIBE_OPERATIONS = frozenset(
    {"DescribeNodegroup", "DescribeUpdate", "DescribeScalingActivities"}
)
ROUTE53_READS = frozenset({"ListResourceRecordSets", "GetChange"})
FLEET_POOLS = 1000
ROUTE53_LEGACY_URL = "https://repost.aws/knowledge-center/route-53-avoid-throttling-errors"
ROUTE53_CURRENT_URL = (
    "https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/throttling-api-requests.html"
)
AUTOSCALING_URL = "https://repost.aws/knowledge-center/autoscaling-api-calls-throttled"
EKS_QUOTAS_URL = (
    "https://docs.aws.amazon.com/eks/latest/best-practices/known_limits_and_service_quotas.html"
)
# Published limits, per account (and Region where the API is regional), in requests/s.
# None: AWS throttles the API per account and Region but publishes no number.
LIMITS: dict[str, tuple[float | None, str]] = {
    "route53": (
        5.0,
        f"5 req/s per account, hard limit ({ROUTE53_LEGACY_URL}); the updated throttling page "
        f"gives an account bucket of 50 refilled at 10/s ({ROUTE53_CURRENT_URL})",
    ),
    "eks": (
        None,
        "per account and Region, no number published for DescribeNodegroup / "
        f"UpdateNodegroupConfig ({EKS_QUOTAS_URL} lists no API rate quota)",
    ),
    "autoscaling": (
        None,
        "one shared bucket for all EC2 Auto Scaling calls per account and Region, "
        f"no number published ({AUTOSCALING_URL})",
    ),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Context:
    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients


async def _no_sleep(seconds: float) -> None:
    return None


def setup(moto_url: str) -> tuple[dict[str, EksNodeGroupRef], dict[str, str]]:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    suffix = uuid.uuid4().hex[:6]
    cluster = f"bench-{suffix}"
    eks.create_cluster(
        name=cluster,
        roleArn="arn:aws:iam::123456789012:role/c",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    refs = {}
    for placement in PLACEMENTS:
        eks.create_nodegroup(
            clusterName=cluster,
            nodegroupName=placement,
            subnets=["subnet-a"],
            nodeRole="arn:aws:iam::123456789012:role/n",
            scalingConfig={
                "minSize": 0,
                "maxSize": 8,
                "desiredSize": 4 if placement == "aws-a" else 1,
            },
        )
        refs[placement] = EksNodeGroupRef(region=REGION, cluster=cluster, nodegroup=placement)
    route53 = boto3.client("route53", region_name=REGION, endpoint_url=moto_url)
    zone = route53.create_hosted_zone(Name=f"{suffix}.example.com", CallerReference=suffix)
    return refs, {"id": zone["HostedZone"]["Id"], "domain": f"{suffix}.example.com"}


def counts(proxy: FaultProxy, since: int) -> Counter[str]:
    return Counter(r.operation for r in proxy.requests()[since:])


async def run() -> dict[str, Any]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    proxy = FaultProxy(upstream=moto_url).start()
    try:
        refs, zone = setup(moto_url)
        clock = FakeClock()
        limiters = RateLimiters(clock=clock)
        options: dict[str, Any] = {
            "region": REGION,
            "limiters": limiters,
            "endpoint_url": proxy.url,
            "sleep": _no_sleep,
        }
        providers = {
            name: EksNodeGroupProvider(
                ref=ref,
                eks=EksApi.create(**options),
                autoscaling=AutoScalingApi.create(**options),
                clock=clock,
            )
            for name, ref in refs.items()
        }
        metrics = ProviderMetrics()
        cloud_probes = [
            CloudProbe(
                placement=name,
                provider=InstrumentedProvider(
                    provider, provider_type="EKSNodeGroup", placement=name, metrics=metrics
                ),
                breaker=CircuitBreaker(clock=clock),
                wall_clock=clock,
            )
            for name, provider in providers.items()
        ]
        records = [{"placement": n, "values": [f"{n}.lb.example.net"]} for n in PLACEMENTS]
        spec = {
            "traffic": {
                "route53": {
                    "hostedZoneId": zone["id"].removeprefix("/hostedzone/"),
                    "recordName": f"api.{zone['domain']}",
                    "records": records,
                }
            },
            "placements": [{"name": n} for n in PLACEMENTS],
        }
        router = build_route53_router(
            spec,
            Context(
                {
                    "route53": make_route53_client(endpoint_url=proxy.url),
                    "route53_limiter": limiters.bucket("route53"),
                }
            ),
        )
        router._sleep = _no_sleep
        router._clock = clock
        await router.apply({"aws-a": 100, "aws-b": 0})
        latencies_ms: list[float] = []

        async def reconcile() -> None:
            for probe in cloud_probes:
                started = time.perf_counter()
                await probe.observe()
                latencies_ms.append((time.perf_counter() - started) * 1000)
            await router.read()

        # Steady state.
        mark = len(proxy.requests())
        for _ in range(STEADY_MINUTES * 60 // PERIOD_S):
            await reconcile()
            clock.now += PERIOD_S
        steady = counts(proxy, mark)

        # Failover: aws-a runs out of capacity; scale aws-b up, shift traffic, scale aws-a
        # down; reconciles continue and re-apply the same plan (which must write nothing).
        mark = len(proxy.requests())
        moto_state.set_nodegroup_ice(
            **{"region": REGION, "cluster": refs["aws-a"].cluster, "nodegroup": "aws-a"}
        )
        scale_writes = 0
        for tick in range(FAILOVER_MINUTES * 60 // PERIOD_S):
            await reconcile()
            if tick >= 1:  # the engine acts on the second observation (hysteresis)
                up = await providers["aws-b"].scale(
                    desired=4, token=idempotency_token("pool", "aws-b", 4, 1)
                )
                down = await providers["aws-a"].scale(
                    desired=1, token=idempotency_token("pool", "aws-a", 1, 1)
                )
                scale_writes += up.writes + down.writes
                await router.apply({"aws-a": 0, "aws-b": 100})
            clock.now += PERIOD_S
        failover = counts(proxy, mark)
    finally:
        proxy.stop()
        server.stop()

    def per_minute(counter: Counter[str], operations: frozenset[str], minutes: int) -> float:
        return sum(v for k, v in counter.items() if k in operations) / minutes

    rows = [
        {
            "phase": "steady",
            "minutes": STEADY_MINUTES,
            "describe_per_placement_per_min": per_minute(
                steady, DESCRIBE_OPERATIONS, STEADY_MINUTES
            )
            / len(PLACEMENTS),
            "route53_reads_per_min": per_minute(
                steady, frozenset({"ListResourceRecordSets", "GetChange"}), STEADY_MINUTES
            ),
            "writes_total": sum(v for k, v in steady.items() if k in WRITE_OPERATIONS),
            "goal": "<= 2 describe/placement/min, 0 writes",
        },
        {
            "phase": "failover",
            "minutes": FAILOVER_MINUTES,
            "describe_per_placement_per_min": per_minute(
                failover, DESCRIBE_OPERATIONS, FAILOVER_MINUTES
            )
            / len(PLACEMENTS),
            "route53_reads_per_min": per_minute(
                failover, frozenset({"ListResourceRecordSets", "GetChange"}), FAILOVER_MINUTES
            ),
            "writes_total": sum(v for k, v in failover.items() if k in WRITE_OPERATIONS),
            "goal": "<= 3 writes in total",
        },
    ]
    return {
        "rows": rows,
        "extra": {
            "period_s": PERIOD_S,
            "steady_calls": dict(steady),
            "failover_calls": dict(failover),
            "describe_latency_ms_over_http": spread(latencies_ms),
        },
    }


def budget_rows(steady: Counter[str], failover: Counter[str]) -> list[dict[str, Any]]:
    """Per pool per minute at steady state, scaled to FLEET_POOLS pools, beside the limits."""
    per_pool = {
        "eks": sum(
            v
            for k, v in steady.items()
            if k in DESCRIBE_OPERATIONS and k != "DescribeScalingActivities"
        )
        / STEADY_MINUTES,
        "autoscaling": steady.get("DescribeScalingActivities", 0) / STEADY_MINUTES,
        "route53": sum(v for k, v in steady.items() if k in ROUTE53_READS) / STEADY_MINUTES,
    }
    rows = []
    for api, calls_per_pool_min in per_pool.items():
        fleet_per_s = calls_per_pool_min * FLEET_POOLS / 60
        limit, source = LIMITS[api]
        bucket = DEFAULT_BUCKETS[api]
        rows.append(
            {
                "API": api,
                "calls/pool/min (steady, measured)": round(calls_per_pool_min, 2),
                f"req/s at {FLEET_POOLS} pools": round(fleet_per_s, 1),
                "AWS published limit (req/s)": "not published" if limit is None else limit,
                "share of limit": "" if limit is None else f"{100 * fleet_per_s / limit:.0f}%",
                "crossfade client bucket (req/s)": bucket.rate_per_s,
                "source": source,
            }
        )
    writes = sum(v for k, v in failover.items() if k in WRITE_OPERATIONS)
    rows.append(
        {
            "API": "writes per failover (UpdateNodegroupConfig + ChangeResourceRecordSets)",
            "calls/pool/min (steady, measured)": 0,
            f"req/s at {FLEET_POOLS} pools": f"{writes} per failing-over pool",
            "AWS published limit (req/s)": "see rows above",
            "share of limit": "",
            "crossfade client bucket (req/s)": "",
            "source": "measured in the failover phase",
        }
    )
    return rows


def main() -> int:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    result = asyncio.run(run())
    budget = budget_rows(
        Counter(result["extra"]["steady_calls"]), Counter(result["extra"]["failover_calls"])
    )
    notes = (
        f"## Budget at {FLEET_POOLS} pools (one pool = the two EKS placements and one Route53 "
        "record set above; steady state, periodSeconds 10)\n\n"
        + markdown_table(budget)
        + "\n\nA steady rate above crossfade's client bucket is not sent: the call reports "
        "Throttled (ClientRateLimited) and that placement's cloud observation is skipped for "
        "the pass."
    )
    md = write_results(
        "aws_calls", rows=result["rows"], extra={**result["extra"], "budget": budget}, notes=notes
    )
    print(md.read_text())
    print({k: v for k, v in result["extra"].items() if k != "describe_latency_ms_over_http"})
    steady, failover = result["rows"]
    ok = (
        steady["describe_per_placement_per_min"] <= 2
        and steady["writes_total"] == 0
        and failover["writes_total"] <= 3
    )
    print("goals met" if ok else "GOALS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
