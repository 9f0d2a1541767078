"""The e2e world: real apiserver objects, moto EKS, the GKE test server, fake endpoints,
and the operator as a subprocess (`crossfade run`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import boto3
import yaml
from kubernetes import client

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, free_port
from crossfade.testing.gke_server import GKEServer
from crossfade.testing.inference_server import FakeInferenceServer
from crossfade.testing.node_simulator import NodeSimulator, SimulatedNodeGroup

GROUP, VERSION, PLURAL = "crossfade.dev", "v1alpha1", "inferencepools"
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
REGION = "us-east-1"
ACCOUNT = "123456789012"
GCP_PROJECT, GCP_LOCATION, GKE_CLUSTER = "demo-project", "us-central1", "inference"
POOL_NAME = "chat"
ROUTE_NAME = "chat"
SERVICES = {"aws": "llm-aws", "gke": "llm-gke"}
OPERATOR_READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.25
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout.

    Async so the fake endpoints served by this event loop keep answering meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class OperatorProcess:
    """`crossfade run` as a child process with its own kubeconfig, health port and log."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    env: dict[str, str]
    identity: str = field(default_factory=lambda: f"op-{uuid.uuid4().hex[:6]}")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crossfade.cli",
                "run",
                "-n",
                self.namespace,
                "--health-host",
                "127.0.0.1",
                "--health-port",
                str(self.port),
                "--lease-namespace",
                self.namespace,
                "--identity",
                self.identity,
                "--period",
                "1",
                *self.extra_args,
            ],
            cwd=REPO_ROOT,
            env={**self.env, "KUBECONFIG": str(self.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    async def wait_ready(self, timeout_s: float = OPERATOR_READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            assert self.alive(), f"operator exited: {self.log_tail()}"
            status, body = self.get("/readyz")
            return status == 200 and '"leader": true' in body

        await eventually(ready, timeout_s=timeout_s, what=f"operator {self.identity} ready")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, as a crashed pod."""
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8000}]},
    }


def kubeconfig_secret(name: str, namespace: str, cluster: TestCluster) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"value": yaml.safe_dump(cluster.kubeconfig_dict())},
    }


def http_route(namespace: str, *, aws_weight: int, gke_weight: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": ROUTE_NAME, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": SERVICES["aws"], "port": 8000, "weight": aws_weight},
                        {"name": SERVICES["gke"], "port": 8000, "weight": gke_weight},
                    ]
                }
            ],
        },
    }


def gke_pool_name(node_pool: str) -> str:
    """Return the full resource name of a node pool of the GKE test server's cluster."""
    return (
        f"projects/{GCP_PROJECT}/locations/{GCP_LOCATION}/clusters/{GKE_CLUSTER}"
        f"/nodePools/{node_pool}"
    )


def eks_placement(
    *, priority: int, role: str, cluster: str, nodegroup: str, aws_url: str, min_nodes: int
) -> dict[str, Any]:
    """The pool's "aws" placement: an EKS node group reached through its kubeconfig Secret."""
    return {
        "name": "aws",
        "priority": priority,
        "role": role,
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": REGION, "cluster": cluster, "nodegroup": nodegroup},
        },
        "accelerator": {"type": "nvidia-l4", "perNode": 1},
        "nodes": {"min": min_nodes, "max": 2},
        "clusterRef": {"name": "aws-kubeconfig", "key": "value"},
        "backendRef": {"kind": "Service", "name": SERVICES["aws"], "port": 8000},
        "endpoint": {"url": aws_url},
    }


def gke_placement(
    *, priority: int, role: str, node_pool: str, gke_url: str, min_nodes: int
) -> dict[str, Any]:
    """The pool's "gke" placement: a node pool of the GKE test server's cluster."""
    return {
        "name": "gke",
        "priority": priority,
        "role": role,
        "provider": {
            "type": "GKENodePool",
            "gkeNodePool": {
                "project": GCP_PROJECT,
                "location": GCP_LOCATION,
                "cluster": GKE_CLUSTER,
                "nodePool": node_pool,
            },
        },
        "accelerator": {"type": "nvidia-l4", "perNode": 1},
        "nodes": {"min": min_nodes, "max": 2},
        "clusterRef": {"name": "gcp-kubeconfig", "key": "value"},
        "backendRef": {"kind": "Service", "name": SERVICES["gke"], "port": 8000},
        "endpoint": {"url": gke_url},
    }


def pool_body(
    namespace: str,
    placements: list[dict[str, Any]],
    *,
    failback_delay_s: int,
    warm_standby_nodes: int,
    deletion_policy: str,
) -> dict[str, Any]:
    """The e2e InferencePool: fast health checks, ActivePassive on the route, automatic."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": POOL_NAME, "namespace": namespace},
        "spec": {
            "placements": placements,
            "healthCheck": {
                "inference": {
                    "periodSeconds": 1,
                    "timeoutSeconds": 1,
                    "failureThreshold": 2,
                    "successThreshold": 2,
                    "initialDelaySeconds": 0,
                },
            },
            "traffic": {
                "mode": "ActivePassive",
                "stepPercent": 50,
                "gatewayAPI": {"httpRouteRef": {"name": ROUTE_NAME}},
            },
            "failover": {
                "automatic": True,
                "tolerationSeconds": 0,
                "failbackDelaySeconds": failback_delay_s,
                "warmStandbyNodes": warm_standby_nodes,
                "maxFailoversPerHour": 10,
            },
            "deletionPolicy": deletion_policy,
        },
    }


def pool_manifest(
    namespace: str,
    *,
    aws_url: str,
    gke_url: str,
    cluster: str,
    nodegroup: str,
    node_pool: str,
    failback_delay_s: int = 15,
) -> dict[str, Any]:
    """EKS primary (2 nodes), GKE standby kept warm with one node, deletionPolicy ScaleToMin."""
    return pool_body(
        namespace,
        [
            eks_placement(
                priority=100,
                role="Primary",
                cluster=cluster,
                nodegroup=nodegroup,
                aws_url=aws_url,
                min_nodes=1,
            ),
            gke_placement(
                priority=50, role="Standby", node_pool=node_pool, gke_url=gke_url, min_nodes=0
            ),
        ],
        failback_delay_s=failback_delay_s,
        warm_standby_nodes=1,
        deletion_policy="ScaleToMin",
    )


@dataclass
class World:
    """Everything one e2e test steers and inspects."""

    cluster: TestCluster
    namespace: str
    moto_url: str
    gke: GKEServer
    aws_server: FakeInferenceServer
    gke_server: FakeInferenceServer
    eks_cluster: str
    nodegroup: str
    node_pool_name: str
    tmp: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    # --- the operator -------------------------------------------------------------------
    def operator(self, *, extra_args: tuple[str, ...] = ()) -> OperatorProcess:
        env = dict(os.environ)
        env["CROSSFADE_AWS_ENDPOINT_URL"] = self.moto_url
        env["CROSSFADE_GKE_ENDPOINT"] = self.gke.endpoint
        op = OperatorProcess(
            kubeconfig=self.cluster.kubeconfig_path,
            namespace=self.namespace,
            log_path=self.tmp / f"operator-{len(self.operators)}.log",
            env=env,
            extra_args=extra_args,
        )
        self.operators.append(op)
        return op.start()

    # --- reading the world --------------------------------------------------------------
    def pool(self) -> dict[str, Any]:
        with self.cluster.api_client() as api:
            obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, POOL_NAME
            )
            return obj

    def route_weights(self) -> dict[str, int]:
        with self.cluster.api_client() as api:
            route = client.CustomObjectsApi(api).get_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", ROUTE_NAME
            )
        by_service = {
            ref["name"]: int(ref.get("weight", 1))
            for ref in route["spec"]["rules"][0]["backendRefs"]
        }
        total = sum(by_service.values()) or 1
        return {p: round(100 * by_service.get(s, 0) / total) for p, s in SERVICES.items()}

    def events(self) -> list[tuple[str, str, str]]:
        with self.cluster.api_client() as api:
            items = client.CoreV1Api(api).list_namespaced_event(self.namespace).items
        return [(e.type, e.reason, e.message) for e in items if e.involved_object.name == POOL_NAME]

    def condition(self, kind: str) -> dict[str, Any] | None:
        for c in (self.pool().get("status") or {}).get("conditions") or ():
            if c.get("type") == kind:
                return dict(c)
        return None

    def eks_desired(self) -> int:
        eks = boto3.client("eks", region_name=REGION, endpoint_url=self.moto_url)
        group = eks.describe_nodegroup(clusterName=self.eks_cluster, nodegroupName=self.nodegroup)
        return int(group["nodegroup"]["scalingConfig"]["desiredSize"])

    def gke_nodes(self) -> int:
        return self.gke.state.node_count(self.node_pool_name)

    def annotate(self, annotations: dict[str, str | None]) -> None:
        with self.cluster.api_client() as api:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                POOL_NAME,
                {"metadata": {"annotations": annotations}},
            )


@contextlib.contextmanager
def gke_test_server() -> Iterator[GKEServer]:
    server = GKEServer().start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Endpoints:
    """Where a pool manifest points: the fake inference servers and the GKE node pool."""

    aws_url: str
    gke_url: str
    node_pool: str


@contextlib.asynccontextmanager
async def running_world(
    *,
    cluster: TestCluster,
    cloud_clusters: Mapping[str, TestCluster],
    namespace: str,
    moto_url: str,
    tmp: Path,
    eks_cluster: str,
    nodegroup: str,
    primary: Literal["aws", "gke"],
    pool: Callable[[Endpoints], dict[str, Any]],
    operator_moto_url: str | None = None,
    simulated_nodegroup: Callable[[World], str] | None = None,
    gke_boot_delay_s: float = 1.0,
) -> AsyncIterator[World]:
    """Serve a pool whose ``primary`` takes all traffic (2 nodes), not yet operated.

    Starts the fake inference servers and the GKE test server, applies the Services, the
    route, the kubeconfig Secrets and ``pool(endpoints)``, and runs a node simulator per
    cloud: nodes appear in the "aws" and "gcp" apiservers as the clouds' sizes change. The
    "aws" simulator follows ``simulated_nodegroup(world)`` (default ``world.nodegroup``).
    The operator reaches moto at ``operator_moto_url`` (default ``moto_url``). On exit every
    operator started is stopped and the pool's status, Events and operator logs printed.
    """
    node_pool = f"gpu-{uuid.uuid4().hex[:6]}"
    full_name = gke_pool_name(node_pool)
    aws_server, gke_server = FakeInferenceServer(), FakeInferenceServer()
    endpoints = Endpoints(
        aws_url=await aws_server.start(), gke_url=await gke_server.start(), node_pool=node_pool
    )
    aws_api = await cloud_clusters["aws"].async_api_client()
    gcp_api = await cloud_clusters["gcp"].async_api_client()
    sim_stop = asyncio.Event()
    sim_tasks: list[asyncio.Task[None]] = []
    with gke_test_server() as gke:
        gke.state.add_pool(full_name, node_count=2 if primary == "gke" else 0)
        aws_weight = 100 if primary == "aws" else 0
        cluster.apply_manifest(
            [
                service(SERVICES["aws"], namespace),
                service(SERVICES["gke"], namespace),
                http_route(namespace, aws_weight=aws_weight, gke_weight=100 - aws_weight),
                kubeconfig_secret("aws-kubeconfig", namespace, cloud_clusters["aws"]),
                kubeconfig_secret("gcp-kubeconfig", namespace, cloud_clusters["gcp"]),
            ],
            namespace=namespace,
        )
        cluster.apply_manifest(pool(endpoints), namespace=namespace)
        world = World(
            cluster=cluster,
            namespace=namespace,
            moto_url=operator_moto_url or moto_url,
            gke=gke,
            aws_server=aws_server,
            gke_server=gke_server,
            eks_cluster=eks_cluster,
            nodegroup=nodegroup,
            node_pool_name=full_name,
            tmp=tmp,
        )
        simulated = world.nodegroup if simulated_nodegroup is None else simulated_nodegroup(world)

        async def eks_desired() -> int:
            return await asyncio.to_thread(
                eks_node_group_desired, moto_url, cluster=eks_cluster, name=simulated
            )

        async def gke_desired() -> int:
            return gke.state.node_count(full_name)

        sims = [
            NodeSimulator(
                api=aws_api,
                group=SimulatedNodeGroup.eks(simulated, accelerators_per_node=1, boot_delay_s=1.0),
                desired_size=eks_desired,
            ),
            NodeSimulator(
                api=gcp_api,
                group=SimulatedNodeGroup.gke(
                    node_pool, accelerators_per_node=1, boot_delay_s=gke_boot_delay_s
                ),
                desired_size=gke_desired,
            ),
        ]
        sim_tasks = [asyncio.create_task(sim.run(period_s=0.5, stop=sim_stop)) for sim in sims]
        try:
            yield world
        finally:
            for op in world.operators:
                op.stop()
            sim_stop.set()
            await asyncio.gather(*sim_tasks, return_exceptions=True)
            await aws_api.close()
            await gcp_api.close()
            await aws_server.stop()
            await gke_server.stop()
            with contextlib.suppress(Exception):
                print("\n--- pool status ---\n" + json.dumps(world.pool().get("status"), indent=1))
                print("--- events ---\n" + "\n".join(map(str, world.events())))
            for index, op in enumerate(world.operators):
                print(f"\n--- operator {index} log tail ---\n{op.log_tail(80)}")


def create_eks_cluster(moto_url: str) -> str:
    """Create an EKS cluster in moto; return its name."""
    name = f"prod-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_url).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a", "subnet-b"]},
    )
    return name


def create_eks_nodegroup(moto_url: str) -> tuple[str, str]:
    """Create an EKS cluster with one node group of 2 nodes in moto; return both names."""
    cluster = create_eks_cluster(moto_url)
    nodegroup = f"gpu-{uuid.uuid4().hex[:8]}"
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    eks.create_nodegroup(
        clusterName=cluster,
        nodegroupName=nodegroup,
        subnets=["subnet-a", "subnet-b"],
        nodeRole=f"arn:aws:iam::{ACCOUNT}:role/node",
        instanceTypes=["g6.xlarge"],
        scalingConfig={"minSize": 1, "maxSize": 2, "desiredSize": 2},
    )
    return cluster, nodegroup


def eks_node_group_desired(moto_url: str, *, cluster: str, name: str) -> int:
    """Return a node group's desired size, 0 while it does not exist (not created yet, or
    deleted): the size a NodeSimulator of a node group crossfade creates should follow."""
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    try:
        group = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
    except eks.exceptions.ResourceNotFoundException:
        return 0
    if group.get("status") == "DELETING":
        return 0
    return int(group["scalingConfig"]["desiredSize"])
