"""Provisioning on demand: time from "create needed" to the create call, cloud calls per failover.

A standby placement with a template and no node group; a failover needs it. One run =
``ensure`` (create) then the capacity provider's ``scale`` to the failover size:

- EKS: ``EksNodeGroupProvisioner`` + ``EksNodeGroupProvider`` against a moto server over HTTP,
  every request counted on the wire by the fault proxy. "create needed -> create call" is the
  time from calling ensure() until the CreateNodegroup request is about to be sent (the
  observer sees the last read before it).
- GKE: ``GkeNodePoolProvisioner`` + ``GKENodePoolProvider`` (official client, REST) against
  ``testing/gke_server.py`` over HTTP, every request counted by the server. "create needed ->
  create call" is the time from calling ensure() until the server receives nodePools.create.
  Operations finish at once here (real GKE takes minutes), so the figures are crossfade's own
  cost, not GKE's. A second GKE scenario has the first machine type stocked out.
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
from google.auth.credentials import AnonymousCredentials
from moto.server import ThreadedMotoServer

from bench.common import spread, write_results
from crossfade.providers.aws_api import EksApi
from crossfade.providers.aws_eks import EksNodeGroupProvider, EksNodeGroupRef
from crossfade.providers.aws_eks_provisioner import EksNodeGroupProvisioner
from crossfade.providers.base import idempotency_token
from crossfade.providers.gke import GKENodePoolProvider, GKENodePoolRef, make_client
from crossfade.providers.gke_provisioner import GkeNodePoolProvisioner
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    NodeGroupTemplate,
    Owner,
)
from crossfade.providers.ratelimit import RateLimiters
from crossfade.testing.aws_faults import FaultProxy
from crossfade.testing.gke_server import GKEServer, GKEState, RecordedRequest

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
GKE_PARENT = "projects/bench/locations/us-central1/clusters/serving"
GKE_TEMPLATE = NodeGroupTemplate(
    instance_types=("a3-highgpu-8g", "a2-ultragpu-8g"),
    subnets=(),
    zones=("us-central1-a",),
    node_role="nodes@bench.iam.gserviceaccount.com",
    min_size=0,
    max_size=4,
)


class TimedGKEState(GKEState):
    """A GKE server state that also notes when each request arrived."""

    def __init__(self) -> None:
        super().__init__(operation_duration_s=0)
        self.arrived_at: list[float] = []

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.arrived_at.append(time.perf_counter())
        super().record(request)


def _gke_operation(request: RecordedRequest) -> str:
    path = request.path
    if "/operations/" in path:
        return "operations.get"
    if path.endswith("/nodePools"):
        return "nodePools.create" if request.method == "POST" else "nodePools.list"
    if ":" in path.rsplit("/", 1)[-1]:
        return "nodePools." + path.rsplit(":", 1)[-1]
    return "nodePools.delete" if request.method == "DELETE" else "nodePools.get"


async def gke_one_run(state: TimedGKEState, endpoint: str) -> tuple[float, float, Counter[str]]:
    before = len(state.requests)
    client = make_client(endpoint=endpoint, credentials=AnonymousCredentials())
    project, location, cluster = GKE_PARENT.split("/")[1::2]
    owner = Owner("serving", "llama", "gcp-standby", str(uuid.uuid4()))
    started = time.perf_counter()
    result = await GkeNodePoolProvisioner(
        project=project, location=location, cluster=cluster, client=client
    ).ensure(owner=owner, template=GKE_TEMPLATE, deletion_policy=DeletionPolicyTag.DELETE)
    created_at = time.perf_counter()
    provider = GKENodePoolProvider(
        ref=GKENodePoolRef(project, location, cluster, result.name), client=client
    )
    await provider.scale(
        desired=FAILOVER_NODES,
        token=idempotency_token(owner.pool_uid, owner.placement, FAILOVER_NODES, 1),
    )
    await provider.aclose()
    with state.lock:
        new = list(zip(state.requests[before:], state.arrived_at[before:], strict=True))
    [create_at, *_] = [at for request, at in new if _gke_operation(request) == "nodePools.create"]
    calls = Counter(_gke_operation(request) for request, _ in new)
    return (create_at - started) * 1000, (created_at - started) * 1000, calls


async def gke_run(*, stockout_first_type: bool) -> dict[str, Any]:
    state = TimedGKEState()
    if stockout_first_type:
        state.set_machine_type_stockout(GKE_TEMPLATE.instance_types[0])
    to_create_ms: list[float] = []
    ensure_ms: list[float] = []
    calls: Counter[str] = Counter()
    with GKEServer(state) as server:
        for _ in range(RUNS):
            to_create, ensure, calls = await gke_one_run(state, server.endpoint)
            to_create_ms.append(to_create)
            ensure_ms.append(ensure)
    return {
        "calls": calls,
        "create_needed_to_create_call_ms": spread(to_create_ms),
        "ensure_with_create_ms": spread(ensure_ms),
    }


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
    gke = await gke_run(stockout_first_type=False)
    gke_stockout = await gke_run(stockout_first_type=True)
    rows: list[dict[str, Any]] = []
    for scenario, counted in (
        ("EKS", calls),
        ("GKE", gke["calls"]),
        ("GKE, first machine type stocked out", gke_stockout["calls"]),
    ):
        rows.extend(
            {"scenario": scenario, "operation": op, "calls_per_failover": n}
            for op, n in sorted(counted.items())
        )
        rows.append(
            {
                "scenario": scenario,
                "operation": "total",
                "calls_per_failover": sum(counted.values()),
            }
        )
    return {
        "rows": rows,
        "extra": {
            "runs": RUNS,
            "create_needed_to_create_call_ms": spread(to_create_ms),
            "ensure_with_create_ms": spread(ensure_ms),
            "gke": {k: v for k, v in gke.items() if k != "calls"},
            "gke_first_type_stocked_out": {k: v for k, v in gke_stockout.items() if k != "calls"},
        },
    }


def timing_notes(result: dict[str, Any]) -> str:
    """Markdown table of the timings (milliseconds, median / p99 over RUNS runs)."""
    extra = result["extra"]
    lines = [
        f"Timings over {extra['runs']} runs each (ms, median / p99); test servers on loopback,",
        "GKE operations finishing at once: crossfade's own cost, not the cloud's.",
        "",
        "| scenario | create needed -> create call | ensure() with create |",
        "|---|---|---|",
    ]
    for scenario, figures in (
        ("EKS", extra),
        ("GKE", extra["gke"]),
        ("GKE, first machine type stocked out", extra["gke_first_type_stocked_out"]),
    ):
        to_create = figures["create_needed_to_create_call_ms"]
        ensure = figures["ensure_with_create_ms"]
        lines.append(
            f"| {scenario} | {to_create['median']:.1f} / {to_create['p99']:.1f} "
            f"| {ensure['median']:.1f} / {ensure['p99']:.1f} |"
        )
    return "\n".join(lines)


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
    md = write_results(
        "provisioning", rows=result["rows"], extra=result["extra"], notes=timing_notes(result)
    )
    print(md.read_text())
    print(result["extra"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
