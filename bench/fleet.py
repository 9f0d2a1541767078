"""A fleet of InferencePools for the scale and soak benchmarks, served by ONE operator process.

What runs (all on loopback, all real processes except where noted):

- the sandbox's three real kube-apiservers + etcd (management, aws, gcp) with our CRDs and
  the Gateway API CRDs;
- per pool ``pool-NNNN`` in namespace ``fleet``: one InferencePool shaped like
  ``examples/quickstart.yaml`` (EKS node group primary, GKE node pool warm standby,
  ActivePassive on its own HTTPRoute ``route-NNNN`` and its two backend Services
  ``llm-aws-NNNN`` / ``llm-gke-NNNN``), API-default probe period 10 s;
- AWS: one moto server (in this process, boto3 over HTTP for the operator) with one EKS
  cluster holding one node group per pool; GKE: the GKE REST test server with one node pool
  per pool;
- Nodes: one simulated Node per node group in the cloud apiservers (labels of EKS / GKE),
  kept in line with the cloud's desired size by ``NodeSimulator`` (only groups whose size
  changed are reconciled, so the fixture itself stays cheap at 2000 groups);
- endpoints: ``SERVER_GROUPS`` fake inference servers for the primaries plus
  ``STANDBY_SERVERS`` for the standbys, all in one child process (``bench.fleet_servers``).
  Pool i's primary endpoint is ``<primary server i % SERVER_GROUPS>/pool-i/aws``, so each
  probe is a real HTTP request and breaking one server breaks the primary of 1/SERVER_GROUPS
  of the pools;
- the operator: ``crossfade run --namespace fleet --no-leader-election`` through
  ``bench.operator_with_task_count`` (adds a thread that logs the asyncio task count).
  Every ``BENCH_OPERATOR_ENV_<NAME>`` of the bench's environment is passed to the operator
  (only) as ``<NAME>``: ``BENCH_OPERATOR_ENV_LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2``
  runs it on the allocator the image uses, without preloading it into the fixture too.

Measurement helpers: ``process_sample`` (RSS, peak RSS, CPU seconds, fds, sockets, threads
from /proc), ``apiserver_writes`` (``apiserver_request_total`` by verb and resource from the
management apiserver's /metrics, admin client certificate), ``load_average``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.eks.models import eks_backends
from moto.server import ThreadedMotoServer
from prometheus_client.parser import text_string_to_metric_families

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, free_port
from crossfade.testing.gke_server import GKEServer, GKEState
from crossfade.testing.node_simulator import NodeSimulator, SimulatedNodeGroup
from crossfade.testing.world import OperatorProcess, load_documents

NAMESPACE = "fleet"
GROUP, VERSION, PLURAL = "crossfade.dev", "v1alpha1", "inferencepools"
ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
REGION = "us-east-1"
EKS_CLUSTER = "inference"
GKE_PROJECT, GKE_LOCATION, GKE_CLUSTER = "demo-project", "us-central1-a", "inference"
SERVER_GROUPS = 10
STANDBY_SERVERS = 2
PROBE_PERIOD_S = int(os.environ.get("BENCH_FLEET_PERIOD_S", "10"))
FAILURE_THRESHOLD = 3
FAILBACK_DELAY_S = 60
NODE_SYNC_PERIOD_S = 2.0
NODE_BOOT_DELAY_S = 3.0
CREATE_CONCURRENCY = 16
FAKE_KEY = "testing"  # moto accepts any key; never a real credential
FAKE_ROLE = "arn:aws:iam::123456789012:role/crossfade-bench"
FAKE_SUBNETS = ["subnet-0bench000000000a"]
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"})
OPERATOR_READY_TIMEOUT_S = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pool_name(index: int) -> str:
    return f"pool-{index:04d}"


def route_name(index: int) -> str:
    return f"route-{index:04d}"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# The machine is shared: a fleet run stops before the operator starves everyone of memory.
MIN_AVAILABLE_MIB = float(os.environ.get("BENCH_MIN_AVAILABLE_MIB", "3072"))


def available_mib() -> float:
    """MemAvailable of the machine, MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


# ... and before the operator alone takes more than this.
MAX_OPERATOR_RSS_MIB = float(os.environ.get("BENCH_MAX_OPERATOR_RSS_MIB", "6144"))


class MemoryGuardError(RuntimeError):
    """A run stopped on purpose: low memory, an operator too big, or reconcile too slow."""

    def __init__(self, message: str, *, reconciled: int, sample: dict[str, float]) -> None:
        super().__init__(message)
        self.reconciled = reconciled
        self.sample = sample


def check_memory(pid: int, *, reconciled: int, pools: int) -> None:
    left = available_mib()
    sample = process_sample(pid)
    if left < MIN_AVAILABLE_MIB or sample["rss_mib"] > MAX_OPERATOR_RSS_MIB:
        raise MemoryGuardError(
            f"stopped at {reconciled}/{pools} pools reconciled: operator RSS "
            f"{sample['rss_mib']:.0f} MiB (cap {MAX_OPERATOR_RSS_MIB:.0f}), machine has "
            f"{left:.0f} MiB available (floor {MIN_AVAILABLE_MIB:.0f})",
            reconciled=reconciled,
            sample=sample,
        )


def process_sample(pid: int) -> dict[str, float]:
    """RSS / peak RSS (MiB), CPU seconds (user+system), open fds, sockets, threads of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat.rsplit(")", 1)[1].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15 of stat
    fd_dir = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(fd))
    return {
        "t": time.time(),
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_s": (utime + stime) / CLK_TCK,
        "fds": float(len(links)),
        "sockets": float(sum(1 for link in links if link.startswith("socket:"))),
        "threads": float(int(fields["Threads"])),
    }


def apiserver_writes(cluster: TestCluster) -> Counter[str]:
    """Cumulative write requests the apiserver served, keyed ``VERB resource``."""
    context: ssl.SSLContext = cluster.ssl_context()
    with urllib.request.urlopen(f"{cluster.server}/metrics", context=context, timeout=30) as r:
        text = r.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            verb = sample.labels.get("verb", "")
            if verb in WRITE_VERBS:
                resource = sample.labels.get("resource", "")
                subresource = sample.labels.get("subresource", "")
                kind = f"{resource}/{subresource}" if subresource else resource
                counts[f"{verb} {kind}"] += int(sample.value)
    return counts


def pool_document(
    template: Mapping[str, Any], *, index: int, primary_url: str, standby_url: str
) -> dict[str, Any]:
    """The quickstart pool renamed for ``index`` with its own node groups, endpoints, route."""
    pool = copy.deepcopy(dict(template))
    pool["metadata"] = {"name": pool_name(index), "namespace": NAMESPACE}
    spec = pool["spec"]
    primary, standby = spec["placements"]
    primary["provider"]["eksNodeGroup"] = {
        "region": REGION,
        "cluster": EKS_CLUSTER,
        "nodegroup": f"ng-{index:04d}",
    }
    primary["endpoint"] = {"url": f"{primary_url}/{pool_name(index)}/aws"}
    primary["backendRef"] = {"name": f"llm-aws-{index:04d}", "port": 8000}
    standby["provider"]["gkeNodePool"] = {
        "project": GKE_PROJECT,
        "location": GKE_LOCATION,
        "cluster": GKE_CLUSTER,
        "nodePool": f"np-{index:04d}",
    }
    standby["endpoint"] = {"url": f"{standby_url}/{pool_name(index)}/gke"}
    standby["backendRef"] = {"name": f"llm-gke-{index:04d}", "port": 8000}
    inference = spec["healthCheck"]["inference"]
    inference.update(
        periodSeconds=PROBE_PERIOD_S,
        timeoutSeconds=2,
        failureThreshold=FAILURE_THRESHOLD,
        successThreshold=2,
    )
    spec["traffic"]["gatewayAPI"]["httpRouteRef"] = {"name": route_name(index)}
    spec["failover"].update(
        tolerationSeconds=PROBE_PERIOD_S,
        failbackDelaySeconds=FAILBACK_DELAY_S,
        maxFailoversPerHour=60,
    )
    return pool


def pool_converged(pool: Mapping[str, Any]) -> bool:
    """Whether a pool serves from its preferred placement with every placement at size."""
    status = pool.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("TrafficSynced") != "True" or conditions.get("FailingOver") != "False":
        return False
    placements = status.get("placements") or []
    for item in placements:
        desired = item.get("desiredNodes")
        if desired is not None and (item.get("readyNodes") or 0) < desired:
            return False
        if item.get("name") == status.get("preferredPlacement") and item.get("weight") != 100:
            return False
    return bool(placements)


def route_document(template: Mapping[str, Any], *, index: int) -> dict[str, Any]:
    route = copy.deepcopy(dict(template))
    route["metadata"] = {"name": route_name(index), "namespace": NAMESPACE}
    backends = route["spec"]["rules"][0]["backendRefs"]
    backends[0]["name"] = f"llm-aws-{index:04d}"
    backends[1]["name"] = f"llm-gke-{index:04d}"
    return route


def service_document(template: Mapping[str, Any], *, name: str) -> dict[str, Any]:
    """A backend Service the route names (the HTTPRoute router refuses missing backends)."""
    service = copy.deepcopy(dict(template))
    service["metadata"] = {"name": name, "namespace": NAMESPACE}
    return service


def kubeconfig_secret(name: str, cluster: TestCluster) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"value": yaml.safe_dump(cluster.kubeconfig_dict())},
    }


@dataclass
class TrackedGroup:
    simulator: NodeSimulator
    desired: Callable[[], int]
    last_desired: int = -1
    settled: bool = False


@dataclass
class FleetNodes:
    """Keeps simulated Nodes of every node group in line, reconciling only groups that moved."""

    groups: list[TrackedGroup] = field(default_factory=list)
    reconciles: int = 0

    async def sync_once(self) -> None:
        todo = [g for g in self.groups if not g.settled or g.desired() != g.last_desired]
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(group: TrackedGroup) -> None:
            async with gate:
                wanted = group.desired()
                with contextlib.suppress(ApiException, OSError):
                    ready = await group.simulator.reconcile_once()
                    group.last_desired, group.settled = wanted, ready >= wanted
                    self.reconciles += 1

        await asyncio.gather(*(one(group) for group in todo))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=NODE_SYNC_PERIOD_S)


@dataclass
class Fleet:
    """The running fleet; built by ``running_fleet``."""

    pools: int
    management: TestCluster
    api: Any
    primary_urls: list[str]
    standby_urls: list[str]
    operator: OperatorProcess
    tasks_file: Path
    nodes: FleetNodes
    gke: GKEServer

    def group_of(self, index: int) -> int:
        return index % SERVER_GROUPS

    def pools_in_group(self, group: int) -> list[int]:
        return [i for i in range(self.pools) if self.group_of(i) == group]

    @property
    def pid(self) -> int:
        assert self.operator.process is not None
        return self.operator.process.pid

    def set_group_behaviour(self, group: int, behaviour: dict[str, Any]) -> None:
        """Switch every primary endpoint served by server ``group`` (over its admin API)."""
        request = urllib.request.Request(
            self.primary_urls[group] + "/_admin/behaviour",
            data=json.dumps(behaviour).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def break_group(self, group: int) -> None:
        self.set_group_behaviour(group, {"behaviour": "5xx", "status": 503})

    def heal_group(self, group: int) -> None:
        self.set_group_behaviour(group, {"behaviour": "healthy"})

    def task_counts(self) -> list[dict[str, Any]]:
        if not self.tasks_file.exists():
            return []
        return [json.loads(line) for line in self.tasks_file.read_text().splitlines() if line]

    async def list_pools(self) -> list[dict[str, Any]]:
        custom = k8s.CustomObjectsApi(self.api)
        answer = await custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def poll_pools(self) -> list[dict[str, Any]]:
        """``list_pools`` for the wait loops: a list the loaded apiserver times out is empty."""
        try:
            return await self.list_pools()
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            print(f"  listing pools failed, trying again: {type(exc).__name__}", flush=True)
            return []

    async def wait_all_reconciled(self, *, timeout_s: float) -> float:
        """Wait until every pool's status.observedGeneration is its generation; return seconds."""
        started = time.monotonic()
        done = 0
        while time.monotonic() - started < timeout_s:
            pools = await self.poll_pools()
            done = sum(
                1
                for pool in pools
                if (pool.get("status") or {}).get("observedGeneration")
                == pool["metadata"].get("generation")
            )
            if len(pools) == self.pools and done == self.pools:
                return time.monotonic() - started
            if not self.operator.alive():
                raise RuntimeError(f"operator died:\n{self.operator.log_tail()}")
            check_memory(self.pid, reconciled=done, pools=self.pools)
            await asyncio.sleep(2.0)
        raise MemoryGuardError(
            f"not every pool reconciled within {timeout_s:.0f} s ({done}/{self.pools})",
            reconciled=done,
            sample=process_sample(self.pid),
        )

    async def wait_all_converged(self, *, timeout_s: float) -> tuple[float | None, int]:
        """Wait until every pool has finished its start-up moves; return (seconds, converged).

        A pool starts at even weights with its primary below demand: the operator scales the
        primary up, waits for its Nodes and steps traffic onto it. Until every pool is done
        the operator's writes are work, not steady-state cost, so the steady window of
        ``bench/scale.py`` starts after this (seconds is None when ``timeout_s`` ran out).
        """
        started = time.monotonic()
        converged = 0
        while time.monotonic() - started < timeout_s:
            pools = await self.poll_pools()
            converged = sum(1 for pool in pools if pool_converged(pool))
            if len(pools) == self.pools and converged == self.pools:
                return time.monotonic() - started, converged
            if not self.operator.alive():
                raise RuntimeError(f"operator died:\n{self.operator.log_tail()}")
            check_memory(self.pid, reconciled=self.pools, pools=self.pools)
            await asyncio.sleep(5.0)
        return None, converged

    async def events_since(self, since_epoch_s: float) -> Counter[str]:
        """Events created in the fleet namespace since ``since_epoch_s``, keyed by reason."""
        core = k8s.CoreV1Api(self.api)
        answer = await core.list_namespaced_event(NAMESPACE)
        reasons: Counter[str] = Counter()
        for event in answer.items:
            created = event.metadata.creation_timestamp
            if created is not None and created.timestamp() >= since_epoch_s:
                reasons[str(event.reason)] += 1
        return reasons

    async def spec_change_latencies(self, indices: list[int], *, concurrency: int) -> list[float]:
        """Patch each pool's spec; seconds until status.observedGeneration reflects it."""
        custom: Any = k8s.CustomObjectsApi(self.api)
        pending: dict[str, tuple[int, float]] = {}
        latencies: list[float] = []
        seen = asyncio.Event()

        async def watch_pools() -> None:
            watcher = k8s_watch.Watch()
            while True:
                async for event in watcher.stream(
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    PLURAL,
                    timeout_seconds=300,
                ):
                    obj = event["object"]
                    name = obj["metadata"]["name"]
                    observed = (obj.get("status") or {}).get("observedGeneration") or 0
                    waiting = pending.get(name)
                    if waiting is not None and observed >= waiting[0]:
                        latencies.append(time.monotonic() - waiting[1])
                        del pending[name]
                        seen.set()

        watcher_task = asyncio.create_task(watch_pools())
        await asyncio.sleep(1.0)  # the watch is established
        try:
            for start in range(0, len(indices), concurrency):
                batch = indices[start : start + concurrency]
                for index in batch:
                    pool = await custom.get_namespaced_custom_object(
                        GROUP, VERSION, NAMESPACE, PLURAL, pool_name(index)
                    )
                    current = int(pool["spec"]["failover"]["failbackDelaySeconds"])
                    wanted = (
                        FAILBACK_DELAY_S + 1 if current == FAILBACK_DELAY_S else FAILBACK_DELAY_S
                    )
                    answer = await custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        NAMESPACE,
                        PLURAL,
                        pool_name(index),
                        {"spec": {"failover": {"failbackDelaySeconds": wanted}}},
                        _content_type="application/merge-patch+json",
                    )
                    pending[pool_name(index)] = (
                        int(answer["metadata"]["generation"]),
                        time.monotonic(),
                    )
                deadline = time.monotonic() + PROBE_PERIOD_S * 6
                while pending and time.monotonic() < deadline:
                    seen.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(seen.wait(), timeout=1.0)
                if pending:
                    raise RuntimeError(f"spec changes not reflected: {sorted(pending)}")
        finally:
            watcher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher_task
        return latencies


def _start_servers(count: int) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'operator'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fleet_servers", str(count)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError("fleet inference servers did not start")
    return process, list(json.loads(line)["urls"])


def _create_cloud_groups(moto_url: str, gke: GKEServer, pools: int) -> None:
    eks = boto3.client(
        "eks",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_KEY,
    )
    eks_backends[DEFAULT_ACCOUNT_ID][REGION].reset()  # moto's state is per process
    eks.create_cluster(
        name=EKS_CLUSTER, roleArn=FAKE_ROLE, resourcesVpcConfig={"subnetIds": FAKE_SUBNETS}
    )

    def one(index: int) -> None:
        eks.create_nodegroup(
            clusterName=EKS_CLUSTER,
            nodegroupName=f"ng-{index:04d}",
            nodeRole=FAKE_ROLE,
            subnets=FAKE_SUBNETS,
            scalingConfig={"minSize": 1, "maxSize": 3, "desiredSize": 1},
        )
        gke.state.add_pool(gke_pool(index), zones=(GKE_LOCATION,), node_count=1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(pools)))


def gke_pool(index: int) -> str:
    return (
        f"projects/{GKE_PROJECT}/locations/{GKE_LOCATION}/clusters/{GKE_CLUSTER}"
        f"/nodePools/np-{index:04d}"
    )


def _eks_desired(index: int) -> Callable[[], int]:
    def read() -> int:
        group = eks_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[EKS_CLUSTER].nodegroups
        return int(group[f"ng-{index:04d}"].scaling_config["desiredSize"])

    return read


def _as_async(read: Callable[[], int]) -> Callable[[], Any]:
    async def desired() -> int:
        return read()

    return desired


async def _create_objects(api: Any, documents: list[dict[str, Any]]) -> None:
    custom: Any = k8s.CustomObjectsApi(api)
    core: Any = k8s.CoreV1Api(api)  # plain dict bodies; the stubs want model objects
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(doc: dict[str, Any]) -> None:
        async with gate:
            if doc["kind"] == "Secret":
                await core.create_namespaced_secret(NAMESPACE, doc)
                return
            if doc["kind"] == "Service":
                await core.create_namespaced_service(NAMESPACE, doc)
                return
            group, version = doc["apiVersion"].split("/")
            plural = PLURAL if doc["kind"] == "InferencePool" else ROUTE_PLURAL
            await custom.create_namespaced_custom_object(group, version, NAMESPACE, plural, doc)

    # Secrets and routes first: everything a pool names exists when the operator sees it.
    first = [d for d in documents if d["kind"] != "InferencePool"]
    await asyncio.gather(*(one(doc) for doc in first))
    await asyncio.gather(*(one(doc) for doc in documents if doc["kind"] == "InferencePool"))


OPERATOR_ENV_PREFIX = "BENCH_OPERATOR_ENV_"


def operator_only_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``BENCH_OPERATOR_ENV_<NAME>=value`` of the bench's environment as ``<NAME>=value``."""
    return {
        key.removeprefix(OPERATOR_ENV_PREFIX): value
        for key, value in environ.items()
        if key.startswith(OPERATOR_ENV_PREFIX) and len(key) > len(OPERATOR_ENV_PREFIX)
    }


def _operator(*, management: TestCluster, moto_url: str, gke: GKEServer, workdir: Path) -> Any:
    empty = workdir / "aws-empty-config"
    empty.touch()
    tasks_file = workdir / "operator-tasks.jsonl"
    tasks_file.unlink(missing_ok=True)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "KUBECONFIG", "CROSSFADE_", "GOOGLE_"))
        },
        "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'operator'}",
        "KUBECONFIG": str(management.kubeconfig_path),
        "AWS_ENDPOINT_URL": moto_url,
        "CROSSFADE_AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": FAKE_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "CROSSFADE_GKE_ENDPOINT": gke.endpoint,
        "PYTHONUNBUFFERED": "1",
        "BENCH_TASKS_FILE": str(tasks_file),
        **operator_only_environment(os.environ),
    }
    health_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.operator_with_task_count",
        "run",
        "--no-leader-election",
        "--health-host",
        "127.0.0.1",
        "--health-port",
        str(health_port),
        "--namespace",
        NAMESPACE,
    ]
    operator = OperatorProcess(
        argv=argv, env=env, log_path=workdir / "operator.log", health_port=health_port
    )
    return operator, tasks_file


@contextlib.asynccontextmanager
async def running_fleet(
    *, management: TestCluster, clouds: Mapping[str, TestCluster], pools: int, workdir: Path
) -> AsyncIterator[Fleet]:
    """Create ``pools`` pools with their fixtures, start the operator; stop all on exit."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    documents = load_documents()
    pool_template = next(d for d in documents if d["kind"] == "InferencePool")
    route_template = next(d for d in documents if d["kind"] == "HTTPRoute")
    service_template = next(d for d in documents if d["kind"] == "Service")
    async with contextlib.AsyncExitStack() as stack:
        servers, urls = _start_servers(SERVER_GROUPS + STANDBY_SERVERS)
        stack.callback(servers.wait)
        stack.callback(servers.terminate)
        primary_urls, standby_urls = urls[:SERVER_GROUPS], urls[SERVER_GROUPS:]
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        gke = GKEServer(GKEState()).start()
        stack.callback(gke.stop)
        await asyncio.to_thread(_create_cloud_groups, moto_url, gke, pools)

        apis = {}
        for name, cluster in {"management": management, **clouds}.items():
            apis[name] = await cluster.async_api_client()
            stack.push_async_callback(apis[name].close)
        api = apis["management"]
        with contextlib.suppress(ApiException):
            await k8s.CoreV1Api(api).create_namespace(
                k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE))
            )

        nodes = FleetNodes()
        for index in range(pools):
            eks_group = SimulatedNodeGroup.eks(
                f"ng-{index:04d}", accelerators_per_node=4, boot_delay_s=NODE_BOOT_DELAY_S
            )
            gke_group = SimulatedNodeGroup.gke(
                f"np-{index:04d}", accelerators_per_node=4, boot_delay_s=NODE_BOOT_DELAY_S
            )
            eks_read = _eks_desired(index)
            gke_read = _gke_reader(gke, index)
            nodes.groups.append(
                TrackedGroup(
                    NodeSimulator(
                        api=apis["aws"], group=eks_group, desired_size=_as_async(eks_read)
                    ),
                    eks_read,
                )
            )
            nodes.groups.append(
                TrackedGroup(
                    NodeSimulator(
                        api=apis["gcp"], group=gke_group, desired_size=_as_async(gke_read)
                    ),
                    gke_read,
                )
            )
        await nodes.sync_once()
        stop = asyncio.Event()
        node_task = asyncio.create_task(nodes.run(stop))

        async def stop_nodes() -> None:
            stop.set()
            await node_task

        stack.push_async_callback(stop_nodes)

        objects: list[dict[str, Any]] = [
            kubeconfig_secret("aws-kubeconfig", clouds["aws"]),
            kubeconfig_secret("gcp-kubeconfig", clouds["gcp"]),
        ]
        for index in range(pools):
            for cloud in ("aws", "gke"):
                name = f"llm-{cloud}-{index:04d}"
                objects.append(service_document(service_template, name=name))
            objects.append(route_document(route_template, index=index))
            objects.append(
                pool_document(
                    pool_template,
                    index=index,
                    primary_url=primary_urls[index % SERVER_GROUPS],
                    standby_url=standby_urls[index % STANDBY_SERVERS],
                )
            )
        await _create_objects(api, objects)

        operator, tasks_file = _operator(
            management=management, moto_url=moto_url, gke=gke, workdir=workdir
        )
        stack.push_async_callback(asyncio.to_thread, operator.stop)
        operator.start()
        if not await operator.wait_ready(timeout_s=OPERATOR_READY_TIMEOUT_S):
            raise RuntimeError(operator.problem)
        yield Fleet(
            pools=pools,
            management=management,
            api=api,
            primary_urls=primary_urls,
            standby_urls=standby_urls,
            operator=operator,
            tasks_file=tasks_file,
            nodes=nodes,
            gke=gke,
        )


def _gke_reader(gke: GKEServer, index: int) -> Callable[[], int]:
    name = gke_pool(index)

    def read() -> int:
        return gke.state.node_count(name)

    return read
