"""ProvisionedProvider over moto (boto3 over HTTP through the fault proxy): a templated EKS
placement reads as a cold standby until scaled, is created once, adopted after a restart,
surfaces ICE on every type to the engine, and is deleted only when it is ours."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry

from crossfade.engine.observations import NodeObservation, ProviderErrorKind
from crossfade.handlers.observe import PlacementObservers
from crossfade.handlers.reconcile import PoolRuntime, reconcile_once
from crossfade.handlers.wiring import SharedClients, build_runtime, registry_provider_factory
from crossfade.providers.aws_eks import AwsProviderContext
from crossfade.providers.errors import InsufficientCapacity
from crossfade.providers.instrumented import InstrumentedProvider, ProviderMetrics
from crossfade.providers.provisioned import (
    NOT_PROVISIONED_STATUS,
    REPEAT_EVENT_AFTER_S,
    ProvisionedProvider,
    ProvisionedTarget,
    ProvisioningEvent,
    ProvisioningMetrics,
    node_group_of,
    placement_with_node_group,
    provisioned_of,
)
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import (
    DeletionPolicyTag,
    Owner,
    node_group_name,
    template_from_placement,
)
from crossfade.providers.registry import ProviderContext, build_eks_node_group
from crossfade.routers.noop import NoopRouter
from crossfade.testing import moto_state
from crossfade.testing.aws_faults import Fault, FaultProxy
from tests.handlers.fakes import (
    FakeEndpoint,
    FakeNodeGroup,
    apply_merge_patch,
    fast_spec,
    observers_for,
    pool_body,
)
from tests.support.moto_server import aws_env, fault_proxy, moto_server

__all__ = ["aws_env", "fault_proxy", "moto_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"


def ice(times: int = 1) -> Fault:
    """CreateNodegroup refused for capacity, ``times`` times (a rule is consumed as it fires)."""
    return Fault(
        kind="server_error",
        operation="CreateNodegroup",
        status=400,
        code="InsufficientInstanceCapacity",
        times=times,
    )


def _new_cluster(moto_url: str) -> str:
    name = f"prod-{uuid.uuid4().hex[:8]}"
    boto3.client("eks", region_name=REGION, endpoint_url=moto_url).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/cluster",
        resourcesVpcConfig={"subnetIds": ["subnet-a"]},
    )
    return name


def _placement(cluster: str, *, lifecycle: str = "OnDemand", low: int = 0) -> dict[str, Any]:
    return {
        "name": "aws-standby",
        "role": "Standby",
        "lifecycle": lifecycle,
        "nodes": {"min": low, "max": 4},
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": REGION, "cluster": cluster, "nodegroup": "unused"},
        },
        "template": {
            "instanceTypes": ["p5.48xlarge", "p4d.24xlarge"],
            "subnets": ["subnet-a"],
            "nodeRole": f"arn:aws:iam::{ACCOUNT}:role/node",
        },
    }


class Recorder:
    """Collects the Events a ProvisionedProvider asks the handler to post."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def __call__(self, event_type: str, reason: ProvisioningEvent, message: str) -> None:
        self.events.append((event_type, reason.value, message))

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def _provider(
    placement: dict[str, Any],
    *,
    endpoint_url: str,
    uid: str,
    notify: Recorder,
    metrics: ProvisioningMetrics | None = None,
    policy: DeletionPolicyTag = DeletionPolicyTag.DELETE,
    clock: Callable[[], float] = time.time,
    event_clock: Callable[[], float] = time.monotonic,
) -> ProvisionedProvider:
    """A wrapper as handlers/wiring.py builds it: registry provisioner, registry provider."""
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=endpoint_url, clock=clock))
    target = ProvisionedTarget(
        owner=Owner(namespace="serving", pool="llama", placement="aws-standby", pool_uid=uid),
        template=template_from_placement(placement),
        deletion_policy=policy,
        provider_type="EKSNodeGroup",
        always_present=placement["lifecycle"] == "AlwaysPresent",
    )
    return ProvisionedProvider(
        target=target,
        provisioner=provisioner_for(placement, context),
        build_inner=lambda name: build_eks_node_group(
            placement_with_node_group(placement, name), context
        ),
        notify=notify,
        metrics=metrics,
        clock=event_clock,
    )


def _groups(moto_url: str, cluster: str) -> list[str]:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    return sorted(eks.list_nodegroups(clusterName=cluster)["nodegroups"])


def _desired(moto_url: str, cluster: str, name: str) -> int:
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_url)
    group = eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]
    return int(group["scalingConfig"]["desiredSize"])


@pytest.fixture
def cluster(moto_server: str, aws_env: None) -> str:
    return _new_cluster(moto_server)


async def test_on_demand_reads_as_cold_standby_then_is_created_once_and_scaled(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    uid, notify = str(uuid.uuid4()), Recorder()
    registry = CollectorRegistry()
    provider = _provider(
        _placement(cluster),
        endpoint_url=fault_proxy.url,
        uid=uid,
        notify=notify,
        metrics=ProvisioningMetrics(registry),
    )
    state = await provider.describe()
    assert (state.status, state.desired, state.ready) == (NOT_PROVISIONED_STATUS, 0, 0)
    observation = state.to_observation(placement="aws-standby", at=1.0)
    assert observation.error is None and observation.desired == 0
    assert (await provider.scale(desired=0, token="t0")).changed is False
    assert fault_proxy.requests("CreateNodegroup") == [] and _groups(moto_server, cluster) == []

    result = await provider.scale(desired=2, token="t1")
    name = node_group_name(provider.target.owner, attempt=0)
    assert result.desired == 2 and provider.node_group == name
    assert len(fault_proxy.requests("CreateNodegroup")) == 1
    assert _groups(moto_server, cluster) == [name]
    assert _desired(moto_server, cluster, name) == 2
    assert notify.reasons() == ["NodeGroupCreated"]
    created = registry.get_sample_value(
        "crossfade_node_group_provisioning_total",
        {
            "provider_type": "EKSNodeGroup",
            "namespace": "serving",
            "pool": "llama",
            "placement": "aws-standby",
            "outcome": "created",
            "kind": "",
        },
    )
    assert created == 1.0
    after = await provider.describe()
    assert after.desired == 2 and after.status != NOT_PROVISIONED_STATUS
    await provider.scale(desired=3, token="t2")
    assert len(fault_proxy.requests("CreateNodegroup")) == 1, "created once, then only scaled"
    assert _desired(moto_server, cluster, name) == 3


async def test_a_restarted_operator_adopts_what_the_previous_one_created(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    uid = str(uuid.uuid4())
    first = _provider(_placement(cluster), endpoint_url=fault_proxy.url, uid=uid, notify=Recorder())
    await first.scale(desired=2, token="t1")
    # A new process: nothing in memory, the status write may never have happened.
    notify = Recorder()
    second = _provider(_placement(cluster), endpoint_url=fault_proxy.url, uid=uid, notify=notify)
    state = await second.describe()
    assert state.desired == 2 and second.node_group == first.node_group
    assert notify.reasons() == ["NodeGroupAdopted"]
    await second.scale(desired=1, token="t3")
    assert len(fault_proxy.requests("CreateNodegroup")) == 1
    assert _groups(moto_server, cluster) == [first.node_group]


async def test_ice_on_every_type_surfaces_as_insufficient_capacity_once(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    notify = Recorder()
    provider = _provider(
        _placement(cluster), endpoint_url=fault_proxy.url, uid=str(uuid.uuid4()), notify=notify
    )
    fault_proxy.add(ice(times=2))
    with pytest.raises(InsufficientCapacity):
        await provider.scale(desired=2, token="t1")
    assert len(fault_proxy.requests("CreateNodegroup")) == 2, "both instance types were tried"
    assert _groups(moto_server, cluster) == []
    iced = (await provider.describe()).to_observation(placement="aws-standby", at=1.0)
    assert iced.error is ProviderErrorKind.INSUFFICIENT_CAPACITY
    assert "AllInstanceTypesExhausted" in iced.message
    again = (await provider.describe()).to_observation(placement="aws-standby", at=2.0)
    assert again.error is None, "reported once: after the engine's backoff it may ask again"
    assert notify.reasons() == ["ProvisioningFailed"]
    await provider.scale(desired=2, token="t2")
    assert provider.node_group == node_group_name(provider.target.owner, attempt=0)


async def test_a_skipped_instance_type_is_reported_and_the_next_one_used(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    notify = Recorder()
    provider = _provider(
        _placement(cluster), endpoint_url=fault_proxy.url, uid=str(uuid.uuid4()), notify=notify
    )
    fault_proxy.add(ice())
    await provider.scale(desired=1, token="t1")
    assert provider.node_group == node_group_name(provider.target.owner, attempt=1)
    assert notify.reasons() == ["InstanceTypeSkipped", "NodeGroupCreated"]
    assert "p5.48xlarge" in notify.events[0][2]
    state = await provider.describe()
    assert not state.insufficient_capacity, "the placement runs on the type that had capacity"


async def test_always_present_is_created_at_nodes_min_on_first_describe(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    provider = _provider(
        _placement(cluster, lifecycle="AlwaysPresent", low=1),
        endpoint_url=fault_proxy.url,
        uid=str(uuid.uuid4()),
        notify=Recorder(),
    )
    state = await provider.describe()
    assert provider.node_group is not None
    assert state.desired == 1 and state.min_size == 1
    assert _desired(moto_server, cluster, provider.node_group) == 1


async def test_delete_owned_removes_only_this_placements_node_groups(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    ours = _provider(
        _placement(cluster), endpoint_url=fault_proxy.url, uid=str(uuid.uuid4()), notify=Recorder()
    )
    other = _provider(
        _placement(cluster), endpoint_url=fault_proxy.url, uid=str(uuid.uuid4()), notify=Recorder()
    )
    await ours.scale(desired=1, token="a")
    await other.scale(desired=1, token="b")
    assert (await ours.scale_if_present(desired=0, token="c")) is not None
    deleted = await ours.delete_owned()
    assert deleted == [ours.node_group or node_group_name(ours.target.owner, attempt=0)]
    eks = boto3.client("eks", region_name=REGION, endpoint_url=moto_server)
    remaining = {
        name: eks.describe_nodegroup(clusterName=cluster, nodegroupName=name)["nodegroup"]["status"]
        for name in _groups(moto_server, cluster)
    }
    assert remaining.get(other.node_group or "") not in (None, "DELETING")
    assert remaining.get(deleted[0]) in (None, "DELETING")


async def test_scale_if_present_never_creates(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    provider = _provider(
        _placement(cluster, low=1),
        endpoint_url=fault_proxy.url,
        uid=str(uuid.uuid4()),
        notify=Recorder(),
    )
    assert await provider.scale_if_present(desired=1, token="t") is None
    assert fault_proxy.requests("CreateNodegroup") == [] and _groups(moto_server, cluster) == []


async def test_wiring_builds_a_provisioned_provider_for_templated_placements(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=fault_proxy.url))
    spec = fast_spec()
    spec["placements"][0]["provider"] = {
        "type": "EKSNodeGroup",
        "eksNodeGroup": {"region": REGION, "cluster": cluster, "nodegroup": "gpu"},
    }
    spec["placements"][1] = {**_placement(cluster), "endpoint": {"url": "http://127.0.0.1:2"}}
    spec["deletionPolicy"] = "Delete"
    clients = SharedClients(
        provider_factory=registry_provider_factory(context),
        provider_context=context,
        provider_metrics=ProviderMetrics(),
    )
    uid = str(uuid.uuid4())
    runtime, problems = await build_runtime(
        spec=spec, namespace="serving", name="llama", clients=clients, uid=uid
    )
    try:
        assert problems == []
        assert provisioned_of(runtime.providers["aws"]) is None, "no template, no wrapper"
        standby = runtime.providers["aws-standby"]
        assert isinstance(standby, InstrumentedProvider), "instrumented like any provider"
        wrapper = provisioned_of(standby)
        assert wrapper is not None
        assert wrapper.target.owner == Owner("serving", "llama", "aws-standby", uid)
        assert wrapper.target.deletion_policy is DeletionPolicyTag.DELETE
        assert node_group_of(standby) is None
        await standby.scale(desired=1, token="t")
        assert node_group_of(standby) == node_group_name(wrapper.target.owner, attempt=0)
        assert _groups(moto_server, cluster) == [node_group_of(standby)]
    finally:
        await runtime.close()


async def test_a_template_on_a_type_without_a_provisioner_is_reported(
    cluster: str, fault_proxy: FaultProxy
) -> None:
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=fault_proxy.url))
    spec = fast_spec()
    karpenter = {
        "type": "KarpenterNodePool",
        "karpenterNodePool": {"nodePool": "gpu", "kubeconfigSecretRef": {"name": "k"}},
    }
    spec["placements"][1] = {**_placement(cluster), "provider": karpenter}
    clients = SharedClients(
        provider_factory=registry_provider_factory(context), provider_context=context
    )
    runtime, problems = await build_runtime(
        spec=spec, namespace="serving", name="llama", clients=clients, uid="u"
    )
    await runtime.close()
    [problem] = [p for p in problems if "aws-standby" in p.message]
    assert problem.reason == "ProviderUnavailable"
    assert "KarpenterNodePool" in problem.message
    assert "aws-standby" not in runtime.providers


async def test_engine_passes_over_a_standby_whose_every_instance_type_is_out_of_capacity(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    """aws fails; its first standby (templated, ICE on both types) is ICE'd by the engine, and
    the next standby gets the traffic; the cloud saw one create per instance type, no more."""
    clock = [1_800_000_000.0]
    spec = fast_spec()
    templated = {
        **_placement(cluster),
        "priority": 70,
        "endpoint": {"url": "http://127.0.0.1:3"},
    }
    spec["placements"].insert(1, templated)
    spec["failover"]["warmStandbyNodes"] = 0
    aws, gke = FakeEndpoint("aws", clock=clock), FakeEndpoint("gke", clock=clock)
    aws_group = FakeNodeGroup("aws", desired=2, min_size=1, max_size=2)
    gke_group = FakeNodeGroup("gke", desired=0, min_size=0, max_size=2)
    notify = Recorder()
    standby = _provider(
        _placement(cluster), endpoint_url=fault_proxy.url, uid=str(uuid.uuid4()), notify=notify
    )
    standby_endpoint = FakeEndpoint("aws-standby", clock=clock)

    async def standby_nodes() -> NodeObservation:
        return NodeObservation(
            placement="aws-standby",
            at=clock[0],
            ready_nodes=0,
            total_nodes=0,
            allocatable_accelerators=0,
        )

    async def standby_cloud() -> Any:
        state = await standby.describe()
        return state.to_observation(placement="aws-standby", at=clock[0])

    runtime = PoolRuntime(
        observers=[
            observers_for(aws, aws_group),
            PlacementObservers(
                placement="aws-standby",
                probe=standby_endpoint.probe,
                nodes=standby_nodes,
                cloud=standby_cloud,
            ),
            observers_for(gke, gke_group),
        ],
        providers={"aws": aws_group, "aws-standby": standby, "gke": gke_group},
        routers=[NoopRouter(placements=frozenset({"aws", "aws-standby", "gke"}))],
    )
    body = pool_body(spec)
    events: list[str] = []

    async def run(passes: int) -> None:
        for _ in range(passes):
            clock[0] += 1.0
            outcome = await reconcile_once(body=body, runtime=runtime, now=clock[0])
            body["status"] = apply_merge_patch(body.get("status"), outcome.status_patch)
            events.extend(event.reason for event in outcome.events)

    await run(5)
    fault_proxy.add(ice(times=2))
    aws.healthy = False
    await run(25)
    weights = {p["name"]: p.get("weight", 0) for p in body["status"]["placements"]}
    assert weights == {"aws": 0, "aws-standby": 0, "gke": 100}, (weights, events)
    assert "InsufficientCapacity" in events
    assert len(fault_proxy.requests("CreateNodegroup")) == 2, "each type once, then backed off"
    assert notify.reasons() == ["ProvisioningFailed"]
    assert _groups(moto_server, cluster) == []


async def test_a_created_group_whose_launch_failed_for_capacity_is_replaced_by_the_next_type(
    cluster: str, fault_proxy: FaultProxy, moto_server: str
) -> None:
    notify, now = Recorder(), [1_800_000_000.0]
    provider = _provider(
        _placement(cluster),
        endpoint_url=fault_proxy.url,
        uid=str(uuid.uuid4()),
        notify=notify,
        clock=lambda: now[0],
    )
    await provider.scale(desired=1, token="t1")
    now[0] += 3600.0  # past the EKS provider's settle window and describe cache
    first = provider.node_group
    assert first == node_group_name(provider.target.owner, attempt=0)
    # EC2 had no p5 after all: the launch fails after the create (asynchronous ICE).
    moto_state.set_nodegroup_ice(region=REGION, cluster=cluster, nodegroup=first)
    moto_state.set_nodegroup_status(
        region=REGION, cluster=cluster, nodegroup=first, status="CREATE_FAILED"
    )
    observed = (await provider.describe()).to_observation(placement="aws-standby", at=1.0)
    assert observed.error is ProviderErrorKind.INSUFFICIENT_CAPACITY, "the engine ICEs it"
    await provider.scale(desired=2, token="t2")
    second = node_group_name(provider.target.owner, attempt=1)
    assert provider.node_group == second
    assert _groups(moto_server, cluster) == [second], "the failed group of ours was deleted"
    assert _desired(moto_server, cluster, second) == 2
    assert notify.reasons() == ["NodeGroupCreated", "InstanceTypeSkipped", "NodeGroupCreated"]
    await provider.scale(desired=1, token="t3")
    assert len(fault_proxy.requests("CreateNodegroup")) == 2


async def test_a_create_failing_on_every_retry_posts_one_event_per_repeat_window(
    cluster: str, fault_proxy: FaultProxy
) -> None:
    notify, now = Recorder(), [0.0]
    provider = _provider(
        _placement(cluster),
        endpoint_url=fault_proxy.url,
        uid=str(uuid.uuid4()),
        notify=notify,
        event_clock=lambda: now[0],
    )
    fault_proxy.add(ice(times=6))
    for _ in range(2):
        with pytest.raises(InsufficientCapacity):
            await provider.scale(desired=1, token="t")
        now[0] += 10.0
    assert notify.reasons() == ["ProvisioningFailed"], "the same failure again is only logged"
    now[0] += REPEAT_EVENT_AFTER_S
    with pytest.raises(InsufficientCapacity):
        await provider.scale(desired=1, token="t")
    assert notify.reasons() == ["ProvisioningFailed", "ProvisioningFailed"]
