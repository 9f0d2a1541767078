"""Pool wiring: breaker keys per cloud cluster, probe config from the API model, providers
scoped to the pool's namespace, instrumented, and closed with the pool."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from crossfade.handlers.wiring import (
    SharedClients,
    breaker_key,
    build_runtime,
    probe_config,
    registry_provider_factory,
)
from crossfade.providers.instrumented import InstrumentedProvider, ProviderMetrics
from crossfade.testing.controlplane import TestCluster

from .fakes import FakeNodeGroup, fast_spec


def eks(name: str, *, region: str, cluster: str) -> dict[str, Any]:
    return {
        "name": name,
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": region, "cluster": cluster, "nodegroup": name},
        },
    }


def test_breakers_are_per_region_and_cluster_not_per_provider_type() -> None:
    a = breaker_key(eks("a", region="us-east-1", cluster="prod"))
    b = breaker_key(eks("b", region="us-west-2", cluster="prod"))
    c = breaker_key(eks("c", region="us-east-1", cluster="prod"))
    d = breaker_key(eks("d", region="us-east-1", cluster="other"))
    assert a != b and a != d
    assert a == c, "node groups of one cluster share its control plane's breaker"
    gke = {
        "name": "g",
        "provider": {
            "type": "GKENodePool",
            "gkeNodePool": {"project": "p", "location": "us-central1", "cluster": "x"},
        },
    }
    assert breaker_key(gke) == "GKENodePool/us-central1/x"


def test_probe_config_comes_from_the_health_check_model() -> None:
    spec = fast_spec()
    spec["healthCheck"] = {
        "inference": {
            "path": "/v1/completions",
            "method": "POST",
            "body": '{"model": "m", "prompt": "hi", "max_tokens": 1, "stream": true}',
            "timeoutSeconds": 2,
            "periodSeconds": 5,
        }
    }
    config = probe_config(spec["placements"][0], spec)
    assert (config.path, config.method) == ("/v1/completions", "POST")
    assert config.stream and config.timeout_s == 2.0
    assert config.url == "http://127.0.0.1:1"


class ClosingGroup(FakeNodeGroup):
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


async def test_providers_are_scoped_instrumented_and_closed_with_the_pool() -> None:
    built: list[tuple[str, str]] = []
    groups: dict[str, ClosingGroup] = {}

    def factory(placement: Mapping[str, Any], namespace: str) -> Any:
        built.append((str(placement["name"]), namespace))
        groups[str(placement["name"])] = ClosingGroup(str(placement["name"]))
        return groups[str(placement["name"])]

    clients = SharedClients(provider_factory=factory, provider_metrics=ProviderMetrics())
    runtime, problems = await build_runtime(
        spec=fast_spec(), namespace="team-a", name="chat", clients=clients
    )
    assert problems == []
    assert built == [("aws", "team-a"), ("gke", "team-a")]
    assert all(isinstance(p, InstrumentedProvider) for p in runtime.providers.values())
    await runtime.providers["gke"].scale(desired=1, token="t")
    assert groups["gke"].desired == 1, "the wrapper passes calls through"
    await runtime.close()
    assert groups["aws"].closed and groups["gke"].closed


def test_registry_factory_reads_secrets_in_the_pool_namespace() -> None:
    seen: list[str] = []

    class Context:
        def for_namespace(self, namespace: str) -> str:
            seen.append(namespace)
            return f"ctx:{namespace}"

    factory = registry_provider_factory(Context())
    assert factory is not None
    with pytest.raises(Exception):  # noqa: B017 - the fake context is no ProviderContext
        factory({"name": "a", "provider": {"type": "NoSuchType"}}, "team-b")
    assert seen == ["team-b"]


@pytest.mark.cluster
async def test_probe_headers_secret_is_read_from_the_pool_namespace(
    management_cluster: TestCluster, namespace: str
) -> None:
    api = await management_cluster.async_api_client()
    try:
        spec = fast_spec()
        spec["healthCheck"] = {"inference": {"headersSecretRef": {"name": "probe-headers"}}}
        session = aiohttp.ClientSession()
        clients = SharedClients(kube_api_client=api, http=session)
        try:
            _, problems = await build_runtime(
                spec=spec, namespace=namespace, name="chat", clients=clients
            )
            assert [p.reason for p in problems] == ["ProbeHeadersUnavailable"]
            token = base64.b64encode(b"Bearer s3cret").decode()
            await k8s.CoreV1Api(api).create_namespaced_secret(
                namespace,
                k8s.V1Secret(
                    metadata=k8s.V1ObjectMeta(name="probe-headers"),
                    data={"Authorization": token},
                ),
            )
            runtime, problems = await build_runtime(
                spec=spec, namespace=namespace, name="chat", clients=clients
            )
            assert problems == []
            assert all("s3cret" not in repr(p) for p in problems)
            await runtime.close()
        finally:
            await session.close()
    finally:
        await api.close()


async def test_first_scale_tells_the_provider_the_size_its_nodes_show() -> None:
    from crossfade.engine.observations import NodeObservation
    from crossfade.handlers.wiring import NodeSizedProvider

    adopted: list[int] = []
    group = FakeNodeGroup("gke", desired=0)
    answers: list[NodeObservation | None] = [
        None,  # the Node cache has not synced yet on the first look
        NodeObservation(
            placement="gke", at=0.0, ready_nodes=1, total_nodes=2, allocatable_accelerators=1
        ),
    ]

    async def observe() -> NodeObservation | None:
        return answers.pop(0) if answers else None

    def adopt(total: int) -> None:
        adopted.append(total)
        group.desired = total

    provider = NodeSizedProvider(group, observe=observe, adopt=adopt, sync_wait_s=5.0)
    result = await provider.scale(desired=2, token="t")
    assert adopted == [2]
    assert not result.changed and group.changes == [], "no resize the pool already has"
    await provider.scale(desired=3, token="u")
    assert adopted == [2], "adopted once per process"
    assert group.changes == [3]
