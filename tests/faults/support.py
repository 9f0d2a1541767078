"""Helpers shared by the fault tests: restarting the operator in place, reading its plan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import boto3
import yaml
from kubernetes import client as sync_client
from kubernetes_asyncio import client as k8s_async
from kubernetes_asyncio import watch as k8s_watch

from crossfade.handlers.reconcile import STATE_ANNOTATION
from crossfade.testing.controlplane import free_port
from tests.e2e.world import (
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    REGION,
    ROUTE_NAME,
    SERVICES,
    OperatorProcess,
    World,
    eventually,
)

AWS_ALL = {"aws": 100, "gke": 0}
GKE_ALL = {"aws": 0, "gke": 100}
NODES_MAX = 2  # both placements of the e2e pool
RECORDER_RETRY_S = 0.2
RECORDER_CATCH_UP_S = 30.0
HTTP_GONE = 410


def restart_in_place(world: World, killed: OperatorProcess) -> OperatorProcess:
    """Start the operator again under the killed one's identity, as the kubelet restarts a
    crashed container in the same pod (POD_NAME, hence the Lease holder, is unchanged)."""
    successor = dataclasses.replace(
        killed,
        log_path=world.tmp / f"operator-{len(world.operators)}.log",
        port=free_port(),
        process=None,
    )
    world.operators.append(successor)
    return successor.start()


def start_operator_via(world: World, *, kubeconfig: dict[str, Any]) -> OperatorProcess:
    """Start the operator with its own kubeconfig (one pointing at a fault proxy)."""
    path = world.tmp / f"operator-{len(world.operators)}.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    op = OperatorProcess(
        kubeconfig=Path(path),
        namespace=world.namespace,
        log_path=world.tmp / f"operator-{len(world.operators)}.log",
        env={
            **os.environ,
            "CROSSFADE_AWS_ENDPOINT_URL": world.moto_url,
            "CROSSFADE_GKE_ENDPOINT": world.gke.endpoint,
        },
    )
    world.operators.append(op)
    return op.start()


def engine_state(world: World) -> dict[str, Any]:
    """The engine state the operator persisted on the pool (its write-ahead plan)."""
    annotations = (world.pool().get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(STATE_ANNOTATION)
    return dict(json.loads(raw)) if raw else {}


def planned_sizes(world: World) -> dict[str, int | None]:
    """Node counts the engine last asked for, per placement (None: never asked)."""
    placements = engine_state(world).get("placements") or {}
    return {name: (placements.get(name) or {}).get("desired") for name in ("aws", "gke")}


def cloud_sizes(world: World) -> dict[str, int]:
    return {"aws": world.eks_desired(), "gke": world.gke_nodes()}


def clouds_match_plan(world: World) -> bool:
    """Every size the engine planned is what the cloud holds (nothing asked for and lost)."""
    sizes = cloud_sizes(world)
    return all(want is None or sizes[name] == want for name, want in planned_sizes(world).items())


def status_matches_route(world: World) -> bool:
    """Status weights agree with the HTTPRoute (the status is not left behind by a crash)."""
    placements = (world.pool().get("status") or {}).get("placements") or ()
    in_status = {p["name"]: int(p.get("weight", 0)) for p in placements}
    return in_status == world.route_weights()


def gke_set_sizes(world: World, *, since: int = 0) -> list[int]:
    """Node counts of every GKE setSize request after position ``since`` of the request log."""
    return [
        int((r.body or {}).get("nodeCount", -1))
        for r in list(world.gke.state.requests)[since:]
        if r.method == "POST" and r.path.endswith(":setSize")
    ]


def orphaned_capacity(world: World) -> list[str]:
    """Node groups or pools beyond the placements' own, and sizes outside [min, max]."""
    found: list[str] = []
    eks = boto3.client("eks", region_name=REGION, endpoint_url=world.moto_url)
    groups = eks.list_nodegroups(clusterName=world.eks_cluster)["nodegroups"]
    if groups != [world.nodegroup]:
        found.append(f"EKS node groups {groups}")
    pools = list(world.gke.state.pools)
    if pools != [world.node_pool_name]:
        found.append(f"GKE node pools {pools}")
    sizes = cloud_sizes(world)
    if not 1 <= sizes["aws"] <= NODES_MAX:
        found.append(f"EKS desired {sizes['aws']} outside [1, {NODES_MAX}]")
    if not 0 <= sizes["gke"] <= NODES_MAX:
        found.append(f"GKE size {sizes['gke']} outside [0, {NODES_MAX}]")
    return found


def operator_log_problems(op: OperatorProcess) -> list[str]:
    """Why the operator process counts as crashed: it exited, or logged a traceback."""
    problems = []
    if not op.alive():
        code = op.process.returncode if op.process is not None else None
        problems.append(f"operator {op.identity} exited with {code}")
    if "Traceback" in op.log_path.read_text(errors="replace"):
        problems.append(f"traceback in {op.log_path.name}")
    return problems


class RouteRecorder:
    """Every version of the pool's HTTPRoute, read from a watch (reconnected from the last
    resourceVersion when the apiserver goes away), as {placement: percent} weights."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.versions: list[tuple[str, dict[str, int]]] = []
        self.errors: list[str] = []
        self.relists = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RouteRecorder:
        self._api = await self._world.cluster.async_api_client()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            # Every version up to the current one is seen before the recording ends.
            await eventually(
                lambda: self.versions and self.versions[-1][0] == self._current_version(),
                timeout_s=RECORDER_CATCH_UP_S,
                what=f"the route recorder catching up (watch errors: {self.errors[-3:]})",
            )
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await self._api.close()

    def _current_version(self) -> str:
        with self._world.cluster.api_client() as api:
            route: dict[str, Any] = sync_client.CustomObjectsApi(api).get_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, self._world.namespace, "httproutes", ROUTE_NAME
            )
        return str(route["metadata"]["resourceVersion"])

    def _record(self, route: dict[str, Any]) -> None:
        version = str(route["metadata"]["resourceVersion"])
        if self.versions and self.versions[-1][0] == version:
            return
        refs = route["spec"]["rules"][0]["backendRefs"]
        by_service = {ref["name"]: int(ref.get("weight", 1)) for ref in refs}
        total = sum(by_service.values())
        weights = {
            p: (round(100 * by_service.get(s, 0) / total) if total else 0)
            for p, s in SERVICES.items()
        }
        self.versions.append((version, weights))

    async def _run(self) -> None:
        custom = k8s_async.CustomObjectsApi(self._api)
        args = (GATEWAY_GROUP, GATEWAY_VERSION, self._world.namespace, "httproutes")
        since: str | None = None
        while True:
            try:
                if since is None:
                    listing = await custom.list_namespaced_custom_object(*args)
                    for item in listing["items"]:
                        if item["metadata"]["name"] == ROUTE_NAME:
                            self._record(item)
                    since = str(listing["metadata"]["resourceVersion"])
                async with k8s_watch.Watch() as watch:
                    async for event in watch.stream(
                        custom.list_namespaced_custom_object,
                        *args,
                        resource_version=since,
                        timeout_seconds=30,
                    ):
                        route = event["object"]
                        if event["type"] == "ERROR":
                            since = None  # 410 Gone: list again
                            break
                        since = str(route["metadata"]["resourceVersion"])
                        if route["metadata"]["name"] == ROUTE_NAME:
                            self._record(route)
            except asyncio.CancelledError:
                raise
            except k8s_async.ApiException as exc:
                self.errors.append(f"{exc.status} {exc.reason}"[:200])
                if exc.status == HTTP_GONE:
                    # A restarted apiserver's watch cache starts after our version: list
                    # again (versions written in between, if any, are not seen).
                    since = None
                    self.relists += 1
                await asyncio.sleep(RECORDER_RETRY_S)
            except Exception as exc:
                # Anything the restarted or frozen apiserver makes the client raise ends
                # this watch; the next one resumes from the last version seen.
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(RECORDER_RETRY_S)

    def all_zero_versions(self) -> list[str]:
        """Route versions in which no placement had any weight."""
        return [v for v, weights in self.versions if not any(weights.values())]
