"""Memory and event-loop time of building EKS providers: shared boto3 clients vs a Session each.

Each mode runs in a fresh Python process (so nothing botocore loaded earlier is reused):
after importing crossfade and boto3, read VmRSS; build ``BENCH_PROVIDER_COUNT`` (default 200)
EKS providers of one region through the registry, the way ``handlers/wiring.py`` does, and
have each describe its node group once (moto over HTTP, so every client is really created);
read VmRSS again. Per provider: (after - before) / count.

Modes:

- ``shared``: the operator's code, ``registry.build_provider`` with a fresh
  ``AwsProviderContext`` per placement (as in production); clients come from
  ``aws_api.PROCESS_CLIENTS`` and are created in the first call's worker thread;
- ``session_per_client``: what the operator did before, ``EksApi.create`` /
  ``AutoScalingApi.create`` each given a new ``aws_api.make_session()``.

Event loop: the factory runs on the loop, so its wall time per call is time the loop is held
(median and max reported); a ticker every 10 ms records the longest loop stall during the
first describes, where the shared mode creates its clients in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import boto3
from moto.server import ThreadedMotoServer

from bench.common import write_results
from crossfade.providers import aws_api
from crossfade.providers.aws_eks import (
    AwsProviderContext,
    EksNodeGroupProvider,
    EksNodeGroupRef,
)
from crossfade.providers.base import CapacityProvider
from crossfade.providers.ratelimit import RateLimiters
from crossfade.providers.registry import ProviderContext, build_provider

COUNT = int(os.environ.get("BENCH_PROVIDER_COUNT", "200"))
REGION = "us-east-1"
MODES = ("session_per_client", "shared")
TICK_S = 0.01
MIB = 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def setup(moto_url: str) -> EksNodeGroupRef:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    cluster = f"bench-{uuid.uuid4().hex[:6]}"
    eks.create_cluster(
        name=cluster,
        roleArn="arn:aws:iam::123456789012:role/c",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    eks.create_nodegroup(
        clusterName=cluster,
        nodegroupName="gpu",
        subnets=["subnet-a"],
        nodeRole="arn:aws:iam::123456789012:role/n",
        scalingConfig={"minSize": 0, "maxSize": 8, "desiredSize": 1},
    )
    return EksNodeGroupRef(region=REGION, cluster=cluster, nodegroup="gpu")


def build_shared(ref: EksNodeGroupRef, moto_url: str) -> CapacityProvider:
    member = {"region": ref.region, "cluster": ref.cluster, "nodegroup": ref.nodegroup}
    placement = {"name": "aws-a", "provider": {"type": "EKSNodeGroup", "eksNodeGroup": member}}
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_url))
    return build_provider(placement, context)


def build_session_per_client(ref: EksNodeGroupRef, moto_url: str) -> CapacityProvider:
    options: dict[str, Any] = {
        "region": ref.region,
        "limiters": RateLimiters(),
        "endpoint_url": moto_url,
    }
    return EksNodeGroupProvider(
        ref=ref,
        eks=aws_api.EksApi.create(session=aws_api.make_session(), **options),
        autoscaling=aws_api.AutoScalingApi.create(session=aws_api.make_session(), **options),
    )


async def measure(mode: str, ref: EksNodeGroupRef, moto_url: str) -> dict[str, Any]:
    build = build_shared if mode == "shared" else build_session_per_client
    before = rss_bytes()
    held: list[float] = []
    providers = []
    for _ in range(COUNT):
        started = time.perf_counter()
        providers.append(build(ref, moto_url))
        held.append(time.perf_counter() - started)
    stalls: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            stalls.append(now - last - TICK_S)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    for provider in providers:
        await provider.describe()
    first_describes_s = time.perf_counter() - started
    done.set()
    await ticking
    after = rss_bytes()
    return {
        "mode": mode,
        "providers": COUNT,
        "rss_before_mib": before / MIB,
        "rss_after_mib": after / MIB,
        "rss_per_provider_mib": (after - before) / COUNT / MIB,
        "build_on_loop_median_ms": statistics.median(held) * 1000,
        "build_on_loop_max_ms": max(held) * 1000,
        "build_on_loop_total_s": sum(held),
        "first_describes_s": first_describes_s,
        "longest_loop_stall_during_describes_ms": max(stalls, default=0.0) * 1000,
    }


def child(mode: str, moto_url: str, ref_json: str) -> None:
    ref = EksNodeGroupRef(**json.loads(ref_json))
    print(json.dumps(asyncio.run(measure(mode, ref, moto_url))))


def main() -> int:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        ref = setup(moto_url)
        ref_json = json.dumps(
            {"region": ref.region, "cluster": ref.cluster, "nodegroup": ref.nodegroup}
        )
        rows = []
        for mode in MODES:
            result = subprocess.run(
                [sys.executable, __file__, "--child", mode, moto_url, ref_json],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.stop()
    shared = rows[MODES.index("shared")]["rss_per_provider_mib"]
    before = rows[MODES.index("session_per_client")]["rss_per_provider_mib"]
    notes = (
        f"RSS per EKS provider: {before:.2f} MiB with a boto3 Session per client (before), "
        f"{shared:.3f} MiB with the process's shared clients (now). Each mode ran in a fresh "
        "process; RSS is VmRSS after the first describe of every provider, so the shared "
        "mode's lazily created clients are included. Build times are wall time of the "
        "factory call, which runs on the event loop in `handlers/wiring.py`."
    )
    write_results("provider_memory", rows=rows, notes=notes)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    sys.exit(main())
