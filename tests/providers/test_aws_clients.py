"""EKS placements share one boto3 Session and one client per service and region.

A Session per placement loaded botocore's service models again for each (about 18 MiB per
EKS placement, bench/results/provider_memory.md). The sessions and clients are counted here
through a real boto3 Session subclass; every call goes to moto over HTTP.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import boto3
import pytest

from crossfade.providers.aws_api import PROCESS_CLIENTS, AwsClients
from crossfade.providers.aws_eks import AwsProviderContext, EksNodeGroupRef, build_eks_provider
from crossfade.providers.registry import ProviderContext, build_provider

PROVIDERS = 12
OTHER_REGION = "eu-west-1"


class CountingSession(boto3.session.Session):
    """A real boto3 Session that records every client it creates and on which thread."""

    def __init__(self, created: list[tuple[str, int]]) -> None:
        super().__init__()
        self._created = created

    def client(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        self._created.append((service_name, threading.get_ident()))
        return super().client(service_name, *args, **kwargs)  # type: ignore[call-overload]


class Counted:
    """Sessions and clients an ``AwsClients`` created."""

    def __init__(self) -> None:
        self.sessions = 0
        self.created: list[tuple[str, int]] = []
        self.clients = AwsClients(session_factory=self._session)

    def _session(self) -> boto3.session.Session:
        self.sessions += 1
        return CountingSession(self.created)

    def per_service(self) -> Counter[str]:
        return Counter(service for service, _ in self.created)


def placement(ref: EksNodeGroupRef, region: str | None = None) -> dict[str, Any]:
    member = {"region": region or ref.region, "cluster": ref.cluster, "nodegroup": ref.nodegroup}
    return {"name": "aws-a", "provider": {"type": "EKSNodeGroup", "eksNodeGroup": member}}


@pytest.fixture
def counted() -> Counted:
    return Counted()


async def test_building_providers_creates_no_session_or_client(
    eks_nodegroup: EksNodeGroupRef, moto_server: str, counted: Counted
) -> None:
    context = AwsProviderContext(endpoint_url=moto_server, clients=counted.clients)
    for _ in range(PROVIDERS):
        build_eks_provider(placement(eks_nodegroup), context)
    assert counted.sessions == 0
    assert counted.created == []


async def test_placements_of_one_region_share_one_session_and_one_client_per_service(
    eks_nodegroup: EksNodeGroupRef, moto_server: str, counted: Counted
) -> None:
    context = AwsProviderContext(endpoint_url=moto_server, clients=counted.clients)
    providers = [build_eks_provider(placement(eks_nodegroup), context) for _ in range(PROVIDERS)]
    for provider in providers:
        state = await provider.describe()
        assert state.desired >= 0
    assert counted.sessions == 1
    assert counted.per_service()["eks"] == 1
    assert set(counted.per_service().values()) == {1}
    assert counted.clients.count == len(counted.created)


async def test_first_client_is_created_off_the_event_loop(
    eks_nodegroup: EksNodeGroupRef, moto_server: str, counted: Counted
) -> None:
    context = AwsProviderContext(endpoint_url=moto_server, clients=counted.clients)
    await build_eks_provider(placement(eks_nodegroup), context).describe()
    [thread] = [ident for service, ident in counted.created if service == "eks"]
    assert thread != threading.get_ident()


async def test_another_region_gets_its_own_client_from_the_same_session(
    eks_nodegroup: EksNodeGroupRef, moto_server: str, counted: Counted
) -> None:
    context = AwsProviderContext(endpoint_url=moto_server, clients=counted.clients)
    await build_eks_provider(placement(eks_nodegroup), context).describe()
    other = build_eks_provider(placement(eks_nodegroup, region=OTHER_REGION), context)
    # The node group exists in the fixture's region only: the call reaches moto and fails.
    with pytest.raises(Exception, match="eks:DescribeNodegroup"):
        await other.describe()
    assert counted.sessions == 1
    assert counted.per_service()["eks"] == 2


async def test_registry_built_providers_share_the_process_clients(
    eks_nodegroup: EksNodeGroupRef, moto_server: str
) -> None:
    # The registry gives every placement a fresh AwsProviderContext; the clients stay shared.
    context = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_server))
    await build_provider(placement(eks_nodegroup), context).describe()
    before = PROCESS_CLIENTS.count
    for _ in range(PROVIDERS):
        fresh = ProviderContext(aws=AwsProviderContext(endpoint_url=moto_server))
        await build_provider(placement(eks_nodegroup), fresh).describe()
    assert PROCESS_CLIENTS.count == before
