"""One "world" for the demo and end-to-end tests: every fake started, wired and recorded.

Given running clusters (a management apiserver with our CRDs and the Gateway API CRDs, and
one apiserver per cloud) and the pool's manifests (``examples/quickstart.yaml``), the world:

- serves AWS from a moto server and GKE from the GKE REST test server, creating the node
  groups / node pools the pool's placements name;
- simulates Nodes in each cloud's apiserver that follow the cloud's desired size, with a
  boot delay (``NodeSimulator``);
- starts one fake OpenAI-compatible inference server per placement and points the
  placement's ``endpoint.url`` at it;
- applies the manifests plus the kubeconfig Secrets the placements' ``clusterRef`` name;
- optionally runs the operator process (``crossfade run``) against all of it;
- sends client traffic routed by the HTTPRoute's live weights (``TrafficGenerator``);
- samples placement health, weights, capacity and client success into ``samples``.

Faults: ``break_placement`` (endpoint 5xx + Nodes NotReady) and ``heal_placement``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from moto.server import ThreadedMotoServer

from crossfade.demo_report import Mark, OperatorEvent, PlacementSample, Sample
from crossfade.handlers.status import phase_of
from crossfade.testing.controlplane import REPO_ROOT, TestCluster, free_port
from crossfade.testing.gke_server import GKEServer, GKEState
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer
from crossfade.testing.node_simulator import NodeSimulator, SimulatedNodeGroup
from crossfade.testing.traffic import HTTPRouteWeights, TrafficGenerator

log = logging.getLogger(__name__)

QUICKSTART_PATH = REPO_ROOT / "examples" / "quickstart.yaml"
POOL_GROUP = "crossfade.dev"
POOL_VERSION = "v1alpha1"
POOL_PLURAL = "inferencepools"
POOL_KIND = "InferencePool"
ROUTE_KIND = "HTTPRoute"
EKS_TYPE = "EKSNodeGroup"
GKE_TYPE = "GKENodePool"
CLOUD_OF_PROVIDER = {EKS_TYPE: "aws", GKE_TYPE: "gcp"}
DEFAULT_BOOT_DELAY_S = 3.0
KUBECONFIG_SECRET_KEY = "value"  # noqa: S105 - the key name Cluster API uses
FAKE_AWS_KEY = "testing"  # moto accepts any key; never a real credential
FAKE_ACCOUNT_ROLE = "arn:aws:iam::123456789012:role/crossfade-demo"
FAKE_SUBNETS = ["subnet-0demo0000000000a"]
OPERATOR_STOP_GRACE_S = 10.0
OPERATOR_READY_POLL_S = 0.25
OPERATOR_LOG_TAIL_LINES = 30
HEALTH_TIMEOUT_S = 1.0
READY_CONDITION = "Ready"


class WorldError(RuntimeError):
    """The manifests ask for something the world cannot simulate."""


@dataclass(frozen=True)
class WorldKnobs:
    """Explicit knobs of a world; the pool's own timings come from its manifest.

    ``probe_period_s`` / ``failback_delay_s`` / ``toleration_s``, when set, override the
    pool's ``healthCheck.inference.periodSeconds`` and ``failover`` fields.
    """

    boot_delay_s: Mapping[str, float] = field(default_factory=dict)
    default_boot_delay_s: float = DEFAULT_BOOT_DELAY_S
    initial_nodes: Mapping[str, int] = field(default_factory=dict)
    node_sync_period_s: float = 0.5
    traffic_rate_per_s: float = 20.0
    route_refresh_s: float = 0.2
    sample_period_s: float = 0.5
    probe_period_s: int | None = None
    toleration_s: int | None = None
    failback_delay_s: int | None = None
    start_operator: bool = True
    operator_period_s: float | None = 1.0
    operator_ready_timeout_s: float = 60.0
    start_traffic: bool = True


@dataclass
class PlacementRig:
    """The fakes behind one placement."""

    name: str
    role: str
    cloud: str
    provider: Mapping[str, Any]
    backend: str
    server: FakeInferenceServer
    simulator: NodeSimulator
    desired_size: Callable[[], Any]
    accelerator_resource: str
    fault: str | None = None


@dataclass
class OperatorProcess:
    """``crossfade run`` as a child process in its own session, logging to a file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_port: int
    process: subprocess.Popen[bytes] | None = None
    problem: str | None = None

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/readyz"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, *, timeout_s: float) -> bool:
        """Poll /readyz; on failure set ``problem`` (why, with the log tail) and return False."""
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.process.returncode if self.process else None
                    self.problem = f"operator exited with code {code}:\n{self.log_tail()}"
                    return False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(self.ready_url) as response:
                        if response.status == 200:
                            return True
                await asyncio.sleep(OPERATOR_READY_POLL_S)
        self.problem = f"operator not ready within {timeout_s:.0f} s:\n{self.log_tail()}"
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period (only our own child)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=OPERATOR_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = OPERATOR_LOG_TAIL_LINES) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def load_documents(path: Path = QUICKSTART_PATH) -> list[dict[str, Any]]:
    """Return the YAML documents of a manifest file (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _find(documents: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc.get("kind") == kind]
    if len(found) != 1:
        raise WorldError(f"the manifests need exactly one {kind}, found {len(found)}")
    return dict(found[0])


def _apply_timing_knobs(pool: dict[str, Any], knobs: WorldKnobs) -> None:
    spec = pool["spec"]
    if knobs.probe_period_s is not None:
        inference = spec.setdefault("healthCheck", {}).setdefault("inference", {})
        inference["periodSeconds"] = knobs.probe_period_s
    failover = spec.setdefault("failover", {})
    if knobs.toleration_s is not None:
        failover["tolerationSeconds"] = knobs.toleration_s
    if knobs.failback_delay_s is not None:
        failover["failbackDelaySeconds"] = knobs.failback_delay_s


def _kubeconfig_secret(*, name: str, key: str, cluster: TestCluster) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "crossfade-demo"}},
        "type": "Opaque",
        "stringData": {key: yaml.safe_dump(cluster.kubeconfig_dict())},
    }


def gke_pool_name(member: Mapping[str, Any]) -> str:
    """Full resource name of a GKE node pool member of a placement."""
    return (
        f"projects/{member['project']}/locations/{member['location']}/"
        f"clusters/{member['cluster']}/nodePools/{member['nodePool']}"
    )


def _gke_zones(location: str) -> tuple[str, ...]:
    # A zone is region + "-x"; a regional pool is simulated in one zone for simplicity.
    return (location,) if location.count("-") >= 2 else (f"{location}-a",)


def _is_ready(node: Any) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == READY_CONDITION and c.status == "True" for c in conditions)


def _accelerators(node: Any, resource: str) -> int:
    allocatable = (node.status.allocatable if node.status else None) or {}
    try:
        return int(allocatable.get(resource, "0"))
    except ValueError:
        return 0


class World:
    """Running fakes, the operator and the recorder; built by ``running_world``."""

    def __init__(
        self,
        *,
        management: TestCluster,
        clouds: Mapping[str, TestCluster],
        namespace: str,
        knobs: WorldKnobs,
        workdir: Path,
    ) -> None:
        self.management = management
        self.clouds = dict(clouds)
        self.namespace = namespace
        self.knobs = knobs
        self.workdir = workdir
        self.pool: dict[str, Any] = {}
        self.route: dict[str, Any] = {}
        self.rigs: dict[str, PlacementRig] = {}
        self.moto: ThreadedMotoServer | None = None
        self.moto_url = ""
        self.gke = GKEServer(GKEState())
        self.operator: OperatorProcess | None = None
        self.traffic: TrafficGenerator | None = None
        self.samples: list[Sample] = []
        self.marks: list[Mark] = []
        self.events: list[OperatorEvent] = []
        self.stop_event = asyncio.Event()
        self._eks_clients: dict[str, Any] = {}
        self._api: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_events: set[str] = set()
        self._records_seen = 0

    # ---- accessors -------------------------------------------------------------------------
    @property
    def pool_name(self) -> str:
        return str(self.pool["metadata"]["name"])

    @property
    def route_name(self) -> str:
        return str(self.route["metadata"]["name"])

    @property
    def primary(self) -> str:
        return next(name for name, rig in self.rigs.items() if rig.role == "Primary")

    @property
    def standbys(self) -> list[str]:
        return [name for name, rig in self.rigs.items() if rig.role != "Primary"]

    def server(self, placement: str) -> FakeInferenceServer:
        return self.rigs[placement].server

    def simulator(self, placement: str) -> NodeSimulator:
        return self.rigs[placement].simulator

    def eks(self, region: str) -> Any:
        """A boto3 EKS client on the world's moto server (fake keys)."""
        if region not in self._eks_clients:
            self._eks_clients[region] = boto3.client(
                "eks",
                region_name=region,
                endpoint_url=self.moto_url,
                aws_access_key_id=FAKE_AWS_KEY,
                aws_secret_access_key=FAKE_AWS_KEY,
            )
        return self._eks_clients[region]

    def api(self, cluster: str) -> Any:
        """The world's kubernetes_asyncio client for ``management`` or a cloud cluster."""
        return self._api[cluster]

    async def desired_nodes(self, placement: str) -> int:
        return int(await self.rigs[placement].desired_size())

    # ---- faults ----------------------------------------------------------------------------
    def mark(self, kind: str, text: str) -> Mark:
        mark = Mark(at=time.time(), kind=kind, text=text)
        self.marks.append(mark)
        log.info("drill: %s", text)
        return mark

    def break_placement(self, placement: str, *, status: int = 503) -> None:
        """Endpoint answers ``status`` to everything and every Node goes NotReady."""
        rig = self.rigs[placement]
        rig.server.set_behaviour(Behaviour.ERROR_5XX, status=status)
        rig.simulator.set_ready(False)
        rig.fault = f"{status} + NotReady"

    def heal_placement(self, placement: str) -> None:
        rig = self.rigs[placement]
        rig.server.set_behaviour(Behaviour.HEALTHY)
        rig.simulator.set_ready(True)
        rig.fault = None

    # ---- set-up ----------------------------------------------------------------------------
    def _start_clouds(self) -> None:
        # moto serves through werkzeug, which logs every request at INFO.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.gke.start()

    def _stop_clouds(self) -> None:
        self.gke.stop()
        if self.moto is not None:
            self.moto.stop()

    def _initial_nodes(self, placement: Mapping[str, Any]) -> int:
        name = str(placement["name"])
        nodes = placement.get("nodes") or {}
        low, high = int(nodes.get("min", 0)), int(nodes["max"])
        if name in self.knobs.initial_nodes:
            wanted = self.knobs.initial_nodes[name]
        elif placement.get("role") == "Primary":
            wanted = high
        else:
            wanted = int((self.pool["spec"].get("failover") or {}).get("warmStandbyNodes", 1))
        return max(low, min(high, wanted))

    def _create_eks(self, member: Mapping[str, Any], *, low: int, high: int, size: int) -> None:
        eks = self.eks(str(member["region"]))
        cluster, nodegroup = str(member["cluster"]), str(member["nodegroup"])
        with contextlib.suppress(eks.exceptions.ResourceInUseException):
            eks.create_cluster(
                name=cluster,
                roleArn=FAKE_ACCOUNT_ROLE,
                resourcesVpcConfig={"subnetIds": FAKE_SUBNETS},
            )
        scaling = {"minSize": low, "maxSize": high, "desiredSize": size}
        try:
            eks.create_nodegroup(
                clusterName=cluster,
                nodegroupName=nodegroup,
                nodeRole=FAKE_ACCOUNT_ROLE,
                subnets=FAKE_SUBNETS,
                scalingConfig=scaling,
            )
        except eks.exceptions.ResourceInUseException:
            # moto's state is per process: a previous world left it; reset its size.
            eks.update_nodegroup_config(
                clusterName=cluster, nodegroupName=nodegroup, scalingConfig=scaling
            )

    def _eks_desired(self, member: Mapping[str, Any]) -> Callable[[], Any]:
        eks = self.eks(str(member["region"]))
        cluster, nodegroup = str(member["cluster"]), str(member["nodegroup"])

        async def desired() -> int:
            answer = await asyncio.to_thread(
                eks.describe_nodegroup, clusterName=cluster, nodegroupName=nodegroup
            )
            return int(answer["nodegroup"]["scalingConfig"]["desiredSize"])

        return desired

    def _gke_desired(self, member: Mapping[str, Any]) -> Callable[[], Any]:
        name = gke_pool_name(member)

        async def desired() -> int:
            return self.gke.state.node_count(name)

        return desired

    async def _build_rig(self, placement: Mapping[str, Any]) -> PlacementRig:
        name = str(placement["name"])
        provider = placement.get("provider") or {}
        provider_type = str(provider.get("type"))
        cloud = CLOUD_OF_PROVIDER.get(provider_type)
        if cloud is None or cloud not in self.clouds:
            raise WorldError(
                f"placement {name}: provider {provider_type} is not simulated "
                f"(supported: {sorted(CLOUD_OF_PROVIDER)} with clusters {sorted(self.clouds)})"
            )
        nodes = placement.get("nodes") or {}
        low, high = int(nodes.get("min", 0)), int(nodes["max"])
        size = self._initial_nodes(placement)
        accelerator = placement.get("accelerator") or {}
        resource = str(accelerator.get("resourceName") or "nvidia.com/gpu")
        group_options: dict[str, Any] = {
            "accelerator_resource": resource,
            "accelerators_per_node": int(accelerator.get("perNode", 1)),
            "boot_delay_s": self.knobs.boot_delay_s.get(name, self.knobs.default_boot_delay_s),
        }
        if provider_type == EKS_TYPE:
            member = provider["eksNodeGroup"]
            await asyncio.to_thread(self._create_eks, member, low=low, high=high, size=size)
            desired = self._eks_desired(member)
            group = SimulatedNodeGroup.eks(str(member["nodegroup"]), **group_options)
        else:
            member = provider["gkeNodePool"]
            full_name = gke_pool_name(member)
            zones = _gke_zones(str(member["location"]))
            self.gke.state.add_pool(full_name, zones=zones, node_count=size // len(zones))
            desired = self._gke_desired(member)
            group = SimulatedNodeGroup.gke(str(member["nodePool"]), **group_options)
        server = FakeInferenceServer()
        await server.start()
        backend = str((placement.get("backendRef") or {}).get("name") or name)
        simulator = NodeSimulator(api=self._api[cloud], group=group, desired_size=desired)
        return PlacementRig(
            name=name,
            role=str(placement.get("role") or "Standby"),
            cloud=cloud,
            provider=provider,
            backend=backend,
            server=server,
            simulator=simulator,
            desired_size=desired,
            accelerator_resource=resource,
        )

    def _manifests(self, documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The documents to apply: endpoints rewritten, kubeconfig Secrets added."""
        result: list[dict[str, Any]] = []
        secrets: dict[str, dict[str, Any]] = {}
        for placement in self.pool["spec"]["placements"]:
            rig = self.rigs[str(placement["name"])]
            placement["endpoint"] = {"url": rig.server.base_url}
            ref = placement.get("clusterRef")
            if ref:
                secret_name = str(ref["name"])
                secrets[secret_name] = _kubeconfig_secret(
                    name=secret_name,
                    key=str(ref.get("key") or KUBECONFIG_SECRET_KEY),
                    cluster=self.clouds[rig.cloud],
                )
        for doc in documents:
            kind = doc.get("kind")
            if kind == POOL_KIND:
                continue
            result.append(self.route if kind == ROUTE_KIND else copy.deepcopy(dict(doc)))
        result.extend(secrets.values())
        result.append(self.pool)  # last: everything it names exists when the operator sees it
        return result

    def operator_command(self) -> OperatorProcess:
        """The operator process this world would run (not started)."""
        health_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "crossfade.cli",
            "run",
            "--no-leader-election",
            "--health-host",
            "127.0.0.1",
            "--health-port",
            str(health_port),
            "--namespace",
            self.namespace,
        ]
        if self.knobs.operator_period_s is not None:
            argv += ["--period", str(self.knobs.operator_period_s)]
        empty = self.workdir / "aws-empty-config"
        empty.touch()
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("AWS_", "KUBECONFIG", "CROSSFADE_", "GOOGLE_"))
            },
            "KUBECONFIG": str(self.management.kubeconfig_path),
            "AWS_ENDPOINT_URL": self.moto_url,
            "CROSSFADE_AWS_ENDPOINT_URL": self.moto_url,
            "AWS_ACCESS_KEY_ID": FAKE_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_AWS_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
            "CROSSFADE_GKE_ENDPOINT": self.gke.endpoint,
            "PYTHONUNBUFFERED": "1",
        }
        return OperatorProcess(
            argv=argv, env=env, log_path=self.workdir / "operator.log", health_port=health_port
        )

    # ---- recording -------------------------------------------------------------------------
    async def _route_weights(self) -> dict[str, int]:
        if self.traffic is not None and self.traffic.current_weights:
            return dict(self.traffic.current_weights)
        reader = HTTPRouteWeights(
            api=self._api["management"], namespace=self.namespace, name=self.route_name
        )
        try:
            return await reader.read()
        except (ApiException, KeyError):
            return {}

    async def _pool_status(self) -> dict[str, Any]:
        custom = k8s.CustomObjectsApi(self._api["management"])
        try:
            pool = await custom.get_namespaced_custom_object(
                POOL_GROUP, POOL_VERSION, self.namespace, POOL_PLURAL, self.pool_name
            )
        except ApiException:
            return {}
        status: dict[str, Any] = pool.get("status") or {}
        return status

    async def _nodes(self, rig: PlacementRig) -> tuple[int, int]:
        core = k8s.CoreV1Api(self._api[rig.cloud])
        selector = ",".join(f"{k}={v}" for k, v in rig.simulator.group.labels.items())
        nodes = (await core.list_node(label_selector=selector)).items
        ready = [node for node in nodes if _is_ready(node)]
        return len(ready), sum(_accelerators(n, rig.accelerator_resource) for n in ready)

    async def _collect_events(self) -> None:
        core = k8s.CoreV1Api(self._api["management"])
        events = await core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.pool_name}"
        )
        for event in events.items:
            uid = str(event.metadata.uid)
            if uid in self._seen_events:
                continue
            self._seen_events.add(uid)
            self.events.append(
                OperatorEvent(
                    at=time.time(),
                    type=str(event.type or ""),
                    reason=str(event.reason or ""),
                    message=str(event.message or ""),
                )
            )

    async def sample_once(self) -> Sample:
        """Take one sample of everything and append it to ``samples``."""
        layer = await self._route_weights()
        total = sum(layer.values())
        status = await self._pool_status()
        health = {
            str(item.get("name")): str(item.get("health") or "Unknown")
            for item in status.get("placements") or []
        }
        placements = []
        for name, rig in self.rigs.items():
            weight = None
            if rig.backend in layer and total > 0:
                weight = 100.0 * layer[rig.backend] / total
            ready, accelerators = await self._nodes(rig)
            try:
                desired: int | None = await rig.desired_size()
            except Exception:  # a cloud double error must not stop the recorder
                desired = None
            placements.append(
                PlacementSample(
                    name=name,
                    health=health.get(name, "Unknown"),
                    weight_percent=weight,
                    desired_nodes=desired,
                    ready_nodes=ready,
                    ready_accelerators=accelerators,
                    endpoint_fault=rig.fault,
                )
            )
        conditions = status.get("conditions") or []
        requests = failed = 0
        if self.traffic is not None:
            fresh = self.traffic.records[self._records_seen :]
            self._records_seen += len(fresh)
            requests, failed = len(fresh), sum(1 for r in fresh if not r.ok)
        with contextlib.suppress(ApiException):
            await self._collect_events()
        sample = Sample(
            at=time.time(),
            placements=tuple(placements),
            phase=status.get("phase") or (phase_of(conditions) if conditions else None),
            active_placement=status.get("activePlacement"),
            requests=requests,
            failed=failed,
        )
        self.samples.append(sample)
        return sample

    async def _record(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(ApiException, OSError, aiohttp.ClientError):
                await self.sample_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=self.knobs.sample_period_s)

    def start_task(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def stop_tasks(self) -> None:
        self.stop_event.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@contextlib.asynccontextmanager
async def running_world(
    *,
    management: TestCluster,
    clouds: Mapping[str, TestCluster],
    documents: Sequence[Mapping[str, Any]] | None = None,
    namespace: str = "default",
    knobs: WorldKnobs | None = None,
    workdir: Path | None = None,
) -> AsyncIterator[World]:
    """Start the world around running clusters; on exit stop everything it started.

    ``documents`` default to examples/quickstart.yaml; ``workdir`` (operator log) to a new
    temporary directory.
    """
    knobs = knobs or WorldKnobs()
    documents = list(documents) if documents is not None else load_documents()
    # Default: a fresh directory, so concurrent worlds never share the operator's log.
    workdir = workdir or Path(tempfile.mkdtemp(prefix="crossfade-world-"))
    workdir.mkdir(parents=True, exist_ok=True)
    world = World(
        management=management, clouds=clouds, namespace=namespace, knobs=knobs, workdir=workdir
    )
    world.pool = copy.deepcopy(_find(documents, POOL_KIND))
    world.pool.setdefault("metadata", {})["namespace"] = namespace
    _apply_timing_knobs(world.pool, knobs)
    world.route = copy.deepcopy(_find(documents, ROUTE_KIND))
    async with contextlib.AsyncExitStack() as stack:
        world._start_clouds()
        stack.callback(world._stop_clouds)
        for name, cluster in {"management": management, **world.clouds}.items():
            world._api[name] = await cluster.async_api_client()
            stack.push_async_callback(world._api[name].close)
        stack.push_async_callback(world.stop_tasks)  # runs before clients and servers close
        for placement in world.pool["spec"]["placements"]:
            rig = await world._build_rig(placement)
            world.rigs[rig.name] = rig
            stack.push_async_callback(rig.server.stop)
        manifests = world._manifests(documents)
        await asyncio.to_thread(management.apply_manifest, manifests, namespace=namespace)
        for rig in world.rigs.values():
            world.start_task(
                rig.simulator.run(period_s=knobs.node_sync_period_s, stop=world.stop_event)
            )
        if knobs.start_operator:
            world.operator = world.operator_command()
            stack.push_async_callback(asyncio.to_thread, world.operator.stop)
            world.operator.start()
            await world.operator.wait_ready(timeout_s=knobs.operator_ready_timeout_s)
        if knobs.start_traffic:
            world.traffic = TrafficGenerator(
                weights=HTTPRouteWeights(
                    api=world._api["management"], namespace=namespace, name=world.route_name
                ),
                endpoints={rig.backend: rig.server.base_url for rig in world.rigs.values()},
                rate_per_s=knobs.traffic_rate_per_s,
                route_refresh_s=knobs.route_refresh_s,
            )
            world.start_task(world.traffic.run(world.stop_event))
        world.start_task(world._record())
        stack.push_async_callback(world.stop_tasks)  # first on exit: no traffic into teardown
        yield world
