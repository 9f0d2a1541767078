"""End-to-end scenario 2: AWS reports insufficient capacity while scaling, the next placement
is asked at once.

The world of tests/e2e/conftest.py gets a third placement between the two: ``aws-b``, a
second EKS node group (cold, in an Availability Zone out of g6.xlarge). When the primary's
endpoint fails, the operator scales ``aws-b`` first; EC2 cannot launch, so moto is made to
report what EKS and Auto Scaling report then (an AsgInstanceLaunchFailures health issue
and a failed scaling activity) and no Node ever joins. The operator must mark ``aws-b``
(Event, Degraded condition, engine state) and ask GKE for the capacity in the same pass.

Passes are counted from the engine-state annotation: the operator writes it ahead of every
effect, so a watch on the pool sees one version per pass that acted.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import boto3
import pytest
from kubernetes import client
from kubernetes_asyncio import client as k8s_async
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.testing import moto_state
from crossfade.testing.inference_server import Behaviour, FakeInferenceServer
from crossfade.testing.traffic import HTTPRouteWeights, TrafficGenerator, summarize

from .test_failover import report
from .world import (
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    GROUP,
    PLURAL,
    POOL_NAME,
    REGION,
    ROUTE_NAME,
    SERVICES,
    VERSION,
    World,
    eventually,
    service,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STATE_ANNOTATION = "crossfade.dev/engine-state"
ICED = "aws-b"
ICED_SERVICE = "llm-aws-b"
INSTANCE_TYPE = "g6.xlarge"
SHIFT_TIMEOUT_S = 90.0
RECORDER_RETRY_S = 0.2


class EngineStates:
    """Every distinct engine-state annotation the pool held, in order, from a watch."""

    def __init__(self, api: Any, namespace: str) -> None:
        self._api = api
        self._namespace = namespace
        self.states: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _record(self, pool: dict[str, Any]) -> None:
        if pool["metadata"]["name"] != POOL_NAME:
            return
        raw = (pool["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
        if raw is None:
            return
        state = json.loads(raw)
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    async def _run(self) -> None:
        custom = k8s_async.CustomObjectsApi(self._api)
        args = (GROUP, VERSION, self._namespace, PLURAL)
        since: str | None = None
        while True:
            try:
                if since is None:
                    listing = await custom.list_namespaced_custom_object(*args)
                    for item in listing["items"]:
                        self._record(item)
                    since = str(listing["metadata"]["resourceVersion"])
                async with k8s_watch.Watch() as watch:
                    async for event in watch.stream(
                        custom.list_namespaced_custom_object,
                        *args,
                        resource_version=since,
                        timeout_seconds=30,
                    ):
                        if event["type"] == "ERROR":
                            since = None  # 410 Gone: list again
                            break
                        since = str(event["object"]["metadata"]["resourceVersion"])
                        self._record(event["object"])
            except (OSError, TimeoutError, aiohttp.ClientError, ApiException):
                await asyncio.sleep(RECORDER_RETRY_S)

    def first_index(self, predicate: Any) -> int | None:
        return next((i for i, state in enumerate(self.states) if predicate(state)), None)


def iced(state: dict[str, Any]) -> bool:
    return ICED in ((state.get("ice") or {}).get("entries") or {})


def gke_asked(state: dict[str, Any]) -> bool:
    return int((state["placements"].get("gke") or {}).get("desired") or 0) >= 2


def create_cold_nodegroup(world: World) -> str:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=world.moto_url)
    name = f"gpu-b-{uuid.uuid4().hex[:6]}"
    eks.create_nodegroup(
        clusterName=world.eks_cluster,
        nodegroupName=name,
        subnets=["subnet-c"],
        nodeRole="arn:aws:iam::123456789012:role/node",
        instanceTypes=[INSTANCE_TYPE],
        scalingConfig={"minSize": 0, "maxSize": 2, "desiredSize": 0},
    )
    return name


def eks_desired(world: World, nodegroup: str) -> int:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=world.moto_url)
    group = eks.describe_nodegroup(clusterName=world.eks_cluster, nodegroupName=nodegroup)
    return int(group["nodegroup"]["scalingConfig"]["desiredSize"])


def add_iced_placement(world: World, *, nodegroup: str, url: str) -> None:
    """Put aws-b between aws and gke: in the pool, the route (weight 0) and a Service."""
    world.cluster.apply_manifest(
        [service(ICED_SERVICE, world.namespace)], namespace=world.namespace
    )
    pool = world.pool()
    placements = pool["spec"]["placements"]
    aws_b = json.loads(json.dumps(placements[0]))
    aws_b.update(
        name=ICED,
        priority=75,
        role="Standby",
        nodes={"min": 0, "max": 2},
        backendRef={"kind": "Service", "name": ICED_SERVICE, "port": 8000},
        endpoint={"url": url},
    )
    aws_b["provider"]["eksNodeGroup"]["nodegroup"] = nodegroup
    spec_patch = {
        "placements": [placements[0], aws_b, placements[1]],
        # Cold standbys: the failover must ask for capacity, which is where ICE shows.
        "failover": {"warmStandbyNodes": 0},
    }
    refs = [
        {"name": SERVICES["aws"], "port": 8000, "weight": 100},
        {"name": ICED_SERVICE, "port": 8000, "weight": 0},
        {"name": SERVICES["gke"], "port": 8000, "weight": 0},
    ]
    with world.cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, world.namespace, PLURAL, POOL_NAME, {"spec": spec_patch}
        )
        custom.patch_namespaced_custom_object(
            GATEWAY_GROUP,
            GATEWAY_VERSION,
            world.namespace,
            "httproutes",
            ROUTE_NAME,
            {"spec": {"rules": [{"backendRefs": refs}]}},
        )


def three_way_weights(world: World) -> dict[str, int]:
    with world.cluster.api_client() as api:
        route: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GATEWAY_GROUP, GATEWAY_VERSION, world.namespace, "httproutes", ROUTE_NAME
        )
    by_service = {
        r["name"]: int(r.get("weight", 1)) for r in route["spec"]["rules"][0]["backendRefs"]
    }
    total = sum(by_service.values()) or 1
    services = {"aws": SERVICES["aws"], ICED: ICED_SERVICE, "gke": SERVICES["gke"]}
    return {p: round(100 * by_service.get(s, 0) / total) for p, s in services.items()}


async def stock_out_when_scaled(world: World, nodegroup: str, fired: list[float]) -> None:
    """Once the operator asks aws-b for nodes, make EKS and Auto Scaling report ICE."""
    await eventually(
        lambda: eks_desired(world, nodegroup) > 0,
        timeout_s=SHIFT_TIMEOUT_S,
        what="a scale request to aws-b",
        interval_s=0.1,
    )
    ref = {"region": REGION, "cluster": world.eks_cluster, "nodegroup": nodegroup}
    moto_state.set_nodegroup_ice(**ref, instance_type=INSTANCE_TYPE)
    for group in moto_state.nodegroup_asg_names(**ref):
        moto_state.add_scaling_activity(region=REGION, group=group, instance_type=INSTANCE_TYPE)
    fired.append(time.time())


async def test_scenario2_aws_insufficient_capacity_asks_the_next_placement_at_once(
    world: World,
) -> None:
    nodegroup = create_cold_nodegroup(world)
    iced_server = FakeInferenceServer()
    add_iced_placement(world, nodegroup=nodegroup, url=await iced_server.start())
    api = await world.cluster.async_api_client()
    states = EngineStates(api, world.namespace)
    states.start()
    fired: list[float] = []
    stock_out = asyncio.create_task(stock_out_when_scaled(world, nodegroup, fired))
    generator = TrafficGenerator(
        weights=HTTPRouteWeights(api=api, namespace=world.namespace, name=ROUTE_NAME),
        endpoints={
            SERVICES["aws"]: world.aws_server.base_url,
            ICED_SERVICE: iced_server.base_url,
            SERVICES["gke"]: world.gke_server.base_url,
        },
        rate_per_s=20.0,
    )
    stop = asyncio.Event()
    traffic: asyncio.Task[None] | None = None
    try:
        op = world.operator()
        await op.wait_ready()
        await eventually(
            lambda: (
                three_way_weights(world) == {"aws": 100, ICED: 0, "gke": 0}
                and (world.pool().get("status") or {}).get("observedGeneration") == 2
            ),
            timeout_s=60.0,
            what="steady state on aws, three placements, cold standbys",
        )
        traffic = asyncio.create_task(generator.run(stop))
        await asyncio.sleep(2)

        outage_at = time.time()
        world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
        await eventually(
            lambda: three_way_weights(world) == {"aws": 0, ICED: 0, "gke": 100},
            timeout_s=SHIFT_TIMEOUT_S,
            what="all traffic on gke",
        )
        shifted_at = time.time()
        stop.set()
        await traffic
        await asyncio.sleep(1)  # let the watch catch up with the last writes
    finally:
        stop.set()
        stock_out.cancel()
        await asyncio.gather(stock_out, return_exceptions=True)
        await states.stop()
        await iced_server.stop()
        await api.close()

    assert fired, "the operator asked aws-b for nodes first"
    assert eks_desired(world, nodegroup) >= 1, "aws-b was asked, not skipped"
    # The ICE placement is marked: Event with the cloud's evidence, Degraded condition.
    events = [(reason, message) for _, reason, message in world.events()]
    ice_events = [m for r, m in events if r == "InsufficientCapacity" and m.startswith(ICED)]
    assert ice_events, events
    assert "InsufficientInstanceCapacity" in ice_events[0], ice_events[0]
    degraded = world.condition("Degraded")
    assert degraded is not None and f"{ICED} InsufficientCapacity" in degraded["message"]
    # The next placement is asked in the same pass (or the next) as the ICE is marked.
    ice_at = states.first_index(iced)
    asked_at = states.first_index(gke_asked)
    assert ice_at is not None and asked_at is not None, states.states
    assert asked_at - ice_at in (0, 1), (ice_at, asked_at, states.states[ice_at : asked_at + 1])
    assert ice_at > 0 and not gke_asked(states.states[ice_at - 1]), "gke asked only after ICE"
    assert world.gke_nodes() == 2
    assert three_way_weights(world) == {"aws": 0, ICED: 0, "gke": 100}

    outage = summarize(generator.records, start=outage_at, end=shifted_at)
    report(
        "scenario2",
        {
            "detection_to_shift_s": round(shifted_at - outage_at, 2),
            "failed_share_during_outage": round(outage.failed_share, 3),
            "ice_reported_to_shift_s": round(shifted_at - fired[0], 2),
            "passes_from_ice_to_next_placement_asked": asked_at - ice_at,
        },
    )
