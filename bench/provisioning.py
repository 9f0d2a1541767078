"""Provisioning on demand: time from "create needed" to the create call, cloud calls per failover.

A standby placement with a template and no node group; a failover needs it. One run =
``EksNodeGroupProvisioner.ensure`` (create) then ``EksNodeGroupProvider.scale`` to the
failover size, against a moto server over HTTP with every request counted on the wire by
the fault proxy. "create needed -> create call" is the time from calling ensure() until
the CreateNodegroup request is about to be sent (the observer sees the last read before it).
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

from bench.common import spread, write_results
from crossfade.providers.aws_api import EksApi
from crossfade.providers.aws_eks import EksNodeGroupProvider, EksNodeGroupRef
from crossfade.providers.aws_eks_provisioner import EksNodeGroupProvisioner
from crossfade.providers.base import idempotency_token
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    NodeGroupTemplate,
    Owner,
)
from crossfade.providers.ratelimit import RateLimiters
from crossfade.testing.aws_faults import FaultProxy

RUNS = 20
REGION = "us-east-1"
FAILOVER_NODES = 2
TEMPLATE = NodeGroupTemplate(
    instance_types=("p5.48xlarge", "p4d.24xlarge"),
    subnets=("subnet-a",),
    node_role="arn:aws:iam::123456789012:role/node",
    min_size=0,
    max_size=4,
)


def _operation(method: str, operation: str) -> str:
    # The fault proxy names only the calls it can fault; name the listing here.
    if method == "GET" and operation.endswith("/node-groups"):
        return "ListNodegroups"
    return operation


async def one_run(proxy: FaultProxy, moto_url: str) -> tuple[float, float, Counter[str]]:
    cluster = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_url).create_cluster(
        name=cluster,
        roleArn="arn:aws:iam::123456789012:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    before = len(proxy.requests())
    last_read_at: list[float] = []

    def observe(api: str, operation: str, outcome: str) -> None:
        if operation == "ListNodegroups":
            last_read_at.append(time.perf_counter())

    limiters = RateLimiters()
    eks = EksApi.create(region=REGION, limiters=limiters, endpoint_url=proxy.url, observer=observe)
    owner = Owner("serving", "llama", "aws-standby", str(uuid.uuid4()))
    started = time.perf_counter()
    result = await EksNodeGroupProvisioner(cluster=cluster, eks=eks).ensure(
        owner=owner, template=TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE
    )
    created_at = time.perf_counter()
    provider = EksNodeGroupProvider(
        ref=EksNodeGroupRef(region=REGION, cluster=cluster, nodegroup=result.name), eks=eks
    )
    await provider.scale(
        desired=FAILOVER_NODES,
        token=idempotency_token(owner.pool_uid, owner.placement, FAILOVER_NODES, 1),
    )
    calls = Counter(_operation(r.method, r.operation) for r in proxy.requests()[before:])
    return (last_read_at[-1] - started) * 1000, (created_at - started) * 1000, calls


async def run(proxy: FaultProxy, moto_url: str) -> dict[str, Any]:
    to_create_ms: list[float] = []
    ensure_ms: list[float] = []
    calls: Counter[str] = Counter()
    for _ in range(RUNS):
        to_create, ensure, counted = await one_run(proxy, moto_url)
        to_create_ms.append(to_create)
        ensure_ms.append(ensure)
        calls = counted  # every run makes the same calls; keep the last
    rows = [{"operation": op, "calls_per_failover": n} for op, n in sorted(calls.items())]
    rows.append({"operation": "total", "calls_per_failover": sum(calls.values())})
    return {
        "rows": rows,
        "extra": {
            "runs": RUNS,
            "create_needed_to_create_call_ms": spread(to_create_ms),
            "ensure_with_create_ms": spread(ensure_ms),
        },
    }


def main() -> int:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    proxy = FaultProxy(upstream=moto_url).start()
    try:
        result = asyncio.run(run(proxy, moto_url))
    finally:
        proxy.stop()
        server.stop()
    md = write_results("provisioning", rows=result["rows"], extra=result["extra"])
    print(md.read_text())
    print(result["extra"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
