"""The world wires every fake together: cloud doubles drive Nodes, traffic follows the route."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from crossfade.testing.controlplane import TestCluster
from crossfade.testing.world import World, WorldKnobs, gke_pool_name, running_world

pytestmark = pytest.mark.cluster

DEADLINE_S = 30.0
FAST = WorldKnobs(
    default_boot_delay_s=0.3, node_sync_period_s=0.2, sample_period_s=0.2, start_operator=False
)


async def eventually(check: Callable[[], bool], *, what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"not within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.1)


def ready_nodes(world: World, placement: str) -> int | None:
    found = world.samples[-1].placement(placement) if world.samples else None
    return None if found is None else found.ready_nodes


def route_with_weights(world: World, weights: dict[str, int]) -> dict[str, object]:
    route = copy.deepcopy(world.route)
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = weights[ref["name"]]
    return route


async def test_traffic_faults_and_secrets_are_wired(
    demo_crds: TestCluster,
    cloud_clusters: dict[str, TestCluster],
    namespace: str,
    tmp_path: Path,
) -> None:
    async with running_world(
        management=demo_crds,
        clouds=cloud_clusters,
        namespace=namespace,
        knobs=FAST,
        workdir=tmp_path,
    ) as world:
        primary, standby = world.primary, world.standbys[0]
        primary_backend = world.rigs[primary].backend
        standby_backend = world.rigs[standby].backend
        # Initial sizes: the primary at nodes.max (3), the standby at warmStandbyNodes (1).
        await eventually(lambda: ready_nodes(world, primary) == 3, what="3 primary nodes Ready")
        await eventually(lambda: ready_nodes(world, standby) == 1, what="1 standby node Ready")
        assert world.traffic is not None
        traffic = world.traffic
        await eventually(lambda: bool(traffic.current_weights), what="route weights read")
        seen = len(traffic.records)  # before the first read, requests have no backend
        await eventually(lambda: len(traffic.records) >= seen + 10, what="client traffic")
        assert {r.backend for r in traffic.records[seen:]} == {primary_backend}
        assert all(r.ok for r in traffic.records[seen:])

        # What the operator would read: the pool points at the fake, the Secret at the cloud.
        with demo_crds.api_client() as api:
            pool = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "crossfade.dev", "v1alpha1", namespace, "inferencepools", world.pool_name
            )
            secret = client.CoreV1Api(api).read_namespaced_secret("aws-kubeconfig", namespace)
        endpoints = {p["name"]: p["endpoint"]["url"] for p in pool["spec"]["placements"]}
        assert endpoints[primary] == world.server(primary).base_url
        kubeconfig = yaml.safe_load(base64.b64decode(secret.data["value"]))
        assert kubeconfig["clusters"][0]["cluster"]["server"] == cloud_clusters["aws"].server

        # Break the primary: its endpoint fails and its Nodes go NotReady.
        seen = len(traffic.records)
        world.break_placement(primary)
        await eventually(lambda: ready_nodes(world, primary) == 0, what="primary NotReady")
        await eventually(lambda: any(r.status == 503 for r in traffic.records[seen:]), what="503s")

        # Move the weights by hand (a stand-in for the operator): traffic follows the route.
        weights = {primary_backend: 0, standby_backend: 100}
        await asyncio.to_thread(
            demo_crds.apply_manifest, route_with_weights(world, weights), namespace=namespace
        )

        def on_standby() -> bool:
            latest = world.samples[-1].placement(standby) if world.samples else None
            return latest is not None and latest.weight_percent == 100.0

        await eventually(on_standby, what="sampled standby weight 100%")
        seen = len(traffic.records)
        await eventually(lambda: len(traffic.records) >= seen + 10, what="more traffic")
        # Allow the route refresh interval for requests already picked before the sample.
        settled = traffic.records[seen + 5 :]
        assert settled and all(r.backend == standby_backend and r.ok for r in settled)

        world.heal_placement(primary)
        await eventually(lambda: ready_nodes(world, primary) == 3, what="primary Ready again")

    # On exit the fakes are gone.
    assert world.traffic is not None and world.stop_event.is_set()


async def test_nodes_follow_the_cloud_doubles_desired_size(
    demo_crds: TestCluster,
    cloud_clusters: dict[str, TestCluster],
    namespace: str,
    tmp_path: Path,
) -> None:
    knobs = WorldKnobs(
        default_boot_delay_s=0.3,
        node_sync_period_s=0.2,
        sample_period_s=0.2,
        start_operator=False,
        start_traffic=False,
        initial_nodes={"aws-primary": 2, "gke-standby": 0},
        probe_period_s=3,
        failback_delay_s=120,
    )
    async with running_world(
        management=demo_crds,
        clouds=cloud_clusters,
        namespace=namespace,
        knobs=knobs,
        workdir=tmp_path,
    ) as world:
        await eventually(lambda: ready_nodes(world, "aws-primary") == 2, what="2 EKS nodes")
        assert ready_nodes(world, "gke-standby") == 0
        with demo_crds.api_client() as api:
            pool = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "crossfade.dev", "v1alpha1", namespace, "inferencepools", world.pool_name
            )
        assert pool["spec"]["healthCheck"]["inference"]["periodSeconds"] == 3
        assert pool["spec"]["failover"]["failbackDelaySeconds"] == 120
        assert pool["spec"]["failover"]["tolerationSeconds"] == 2  # from the file
        member = world.rigs["aws-primary"].provider["eksNodeGroup"]
        await asyncio.to_thread(
            world.eks(member["region"]).update_nodegroup_config,
            clusterName=member["cluster"],
            nodegroupName=member["nodegroup"],
            scalingConfig={"desiredSize": 1},
        )
        await eventually(lambda: ready_nodes(world, "aws-primary") == 1, what="EKS scaled to 1")
        gke_member = world.rigs["gke-standby"].provider["gkeNodePool"]
        world.gke.state.set_size(gke_pool_name(gke_member), 2)
        await eventually(lambda: ready_nodes(world, "gke-standby") == 2, what="GKE scaled to 2")
        assert await world.desired_nodes("gke-standby") == 2
        # The operator would get the moto and GKE endpoints and fake keys, nothing from the host.
        operator = world.operator_command()
        assert operator.env["AWS_ENDPOINT_URL"] == world.moto_url
        assert operator.env["CROSSFADE_GKE_ENDPOINT"] == world.gke.endpoint
        assert operator.env["AWS_ACCESS_KEY_ID"] == "testing"
        assert "--namespace" in operator.argv and namespace in operator.argv
