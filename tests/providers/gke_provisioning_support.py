"""Shared helpers of the GKE provisioning and reaper tests: a GKE test server, templates, owners."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials

from crossfade.providers.gke import make_client
from crossfade.providers.gke_provisioner import GkeNodePoolProvisioner
from crossfade.providers.provisioning import NodeGroupTemplate, Owner, Taint
from crossfade.testing.gke_server import GKEServer, GKEState, RecordedRequest

PROJECT = "demo"
LOCATION = "us-central1"
CLUSTER = "serving"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
OPERATION_S = 30.0
TEMPLATE = NodeGroupTemplate(
    instance_types=("a3-highgpu-8g", "a2-ultragpu-8g"),
    subnets=(),
    zones=("us-central1-a", "us-central1-b"),
    node_role="nodes@demo.iam.gserviceaccount.com",
    min_size=2,
    max_size=4,
    labels={"crossfade.dev/workload": "inference"},
    taints=(Taint(key="nvidia.com/gpu", value="present"),),
    disk_size_gib=200,
)


class StepClock:
    """Server and provisioner share this clock; each poll sleep moves it forward."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def step_clock() -> StepClock:
    return StepClock()


@pytest.fixture
def gke_state(step_clock: StepClock) -> GKEState:
    return GKEState(clock=step_clock, operation_duration_s=OPERATION_S)


@pytest.fixture
def gke_server(gke_state: GKEState) -> Iterator[GKEServer]:
    with GKEServer(gke_state) as running:
        yield running


def new_owner(placement: str = "gcp-standby") -> Owner:
    return Owner(namespace="serving", pool="llama", placement=placement, pool_uid=str(uuid.uuid4()))


def make_provisioner(
    server: GKEServer, clock: StepClock, *, create_wait_s: float = 4 * OPERATION_S
) -> GkeNodePoolProvisioner:
    """A fresh provisioner (a fresh operator process, as far as memory goes)."""
    return GkeNodePoolProvisioner(
        project=PROJECT,
        location=LOCATION,
        cluster=CLUSTER,
        client=make_client(endpoint=server.endpoint, credentials=AnonymousCredentials()),
        create_wait_s=create_wait_s,
        poll_interval_s=5.0,
        sleep=clock.sleep,
        clock=clock,
    )


def creates(state: GKEState) -> list[RecordedRequest]:
    return state.requests_of("POST", f"{PARENT}/nodePools")


def deletes(state: GKEState) -> list[RecordedRequest]:
    return [r for r in state.requests if r.method == "DELETE"]


def pool_names(state: GKEState) -> list[str]:
    prefix = f"{PARENT}/nodePools/"
    with state.lock:
        return sorted(name.removeprefix(prefix) for name in state.pools)


def add_team_pool(state: GKEState, name: str) -> None:
    """A node pool a team made by hand, labelled but not by crossfade."""
    from google.cloud import container_v1

    record = state.add_pool(f"{PARENT}/nodePools/{name}", zones=("us-central1-a",))
    record.config = container_v1.NodeConfig(
        machine_type="g2-standard-8", resource_labels={"team": "ml"}
    )
