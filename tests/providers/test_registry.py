"""Provider registry: entry points, built-in fallback, API-shaped placements, and conformance.

The shared conformance suite (tests/providers/conformance.py) is collected here: the
registry's promise is that every provider type it knows keeps the CapacityProvider contract.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from crossfade.api import Placement
from crossfade.api.fields import ProviderType
from crossfade.providers import registry
from crossfade.providers.base import CapacityProvider
from crossfade.providers.capi import ClusterAPIProvider
from crossfade.providers.errors import InvalidRequest
from crossfade.providers.gke import GKENodePoolProvider
from crossfade.providers.karpenter import KarpenterNodePoolProvider
from crossfade.providers.registry import (
    BUILTIN_FACTORIES,
    ProviderContext,
    UnknownProviderType,
    available_types,
    build_provider,
)
from tests.providers.conformance import *  # noqa: F403 (collects the shared suite here)

MEMBERS: dict[str, dict[str, Any]] = {
    "EKSNodeGroup": {
        "eksNodeGroup": {"region": "us-east-1", "cluster": "prod", "nodegroup": "gpu"}
    },
    "GKENodePool": {
        "gkeNodePool": {
            "project": "demo-project",
            "location": "us-central1",
            "cluster": "serving",
            "nodePool": "l4",
        }
    },
    "ClusterAPI": {
        "clusterAPI": {
            "kubeconfigSecretRef": {"name": "fleet-kubeconfig"},
            "namespace": "fleet",
            "machineDeployment": "gpu",
        }
    },
    "KarpenterNodePool": {"karpenterNodePool": {"nodePool": "gpu"}},
}


def api_placement(provider_type: str) -> dict[str, Any]:
    """Return a placement as the API models validate and serialise it (wire form)."""
    wire = {
        "name": "secondary",
        "priority": 10,
        "provider": {"type": provider_type, **MEMBERS[provider_type]},
        "accelerator": {"perNode": 4, "resourceName": "nvidia.com/gpu"},
        "nodes": {"min": 0, "max": 6},
    }
    return Placement.model_validate(wire).to_wire()


CONTEXT = ProviderContext(
    namespace="team-a",
    gke_endpoint="http://127.0.0.1:9",
    gke_credentials=AnonymousCredentials(),
    kube_api_client=object(),
)


def test_built_in_table_covers_every_provider_type_of_the_api() -> None:
    assert set(BUILTIN_FACTORIES) == {member.value for member in ProviderType}


@pytest.mark.parametrize(
    ("provider_type", "expected"),
    [
        ("GKENodePool", GKENodePoolProvider),
        ("ClusterAPI", ClusterAPIProvider),
        ("KarpenterNodePool", KarpenterNodePoolProvider),
    ],
)
def test_api_shaped_placements_build_the_right_provider(
    provider_type: str, expected: type[Any]
) -> None:
    provider = build_provider(api_placement(provider_type), CONTEXT)
    assert type(provider) is expected
    assert isinstance(provider, CapacityProvider)


def test_api_shaped_eks_placement_builds_through_the_aws_factory(aws_env: None) -> None:
    provider = build_provider(api_placement("EKSNodeGroup"), CONTEXT)
    assert isinstance(provider, CapacityProvider)
    assert "prod" in provider.name and "gpu" in provider.name


def test_eks_placements_without_a_context_share_the_process_buckets(aws_env: None) -> None:
    """Per-placement buckets would let 1000 placements call AWS at 1000 times the rate."""
    from crossfade.providers.aws_eks import process_aws_context

    first = build_provider(api_placement("EKSNodeGroup"), CONTEXT)
    second = build_provider(api_placement("EKSNodeGroup"), CONTEXT)
    members = process_aws_context().members
    assert first in members and second in members
    assert first._eks.caller._bucket is second._eks.caller._bucket  # type: ignore[attr-defined]


def test_placement_values_reach_the_provider() -> None:
    gke = build_provider(api_placement("GKENodePool"), CONTEXT)
    assert isinstance(gke, GKENodePoolProvider)
    assert (
        gke.ref.name == "projects/demo-project/locations/us-central1/clusters/serving/nodePools/l4"
    )
    karpenter = build_provider(api_placement("KarpenterNodePool"), CONTEXT)
    assert isinstance(karpenter, KarpenterNodePoolProvider)
    assert (karpenter.ref.accelerators_per_node, karpenter.ref.accelerator_resource) == (
        4,
        "nvidia.com/gpu",
    )
    capi = build_provider(api_placement("ClusterAPI"), CONTEXT)
    assert isinstance(capi, ClusterAPIProvider)
    assert (capi.ref.namespace, capi.ref.name) == ("fleet", "gpu")


def test_unknown_type_names_the_known_ones() -> None:
    placement = {"name": "x", "provider": {"type": "OracleOKE"}}
    with pytest.raises(UnknownProviderType, match=r"OracleOKE.*known: ClusterAPI, EKSNodeGroup"):
        build_provider(placement, CONTEXT)


def test_missing_member_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match=r"provider\.gkeNodePool is missing"):
        build_provider({"name": "x", "provider": {"type": "GKENodePool"}}, CONTEXT)


@pytest.fixture
def acme_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install (on sys.path) a third-party package declaring a crossfade.providers entry point."""
    (tmp_path / "acme_metal.py").write_text(
        textwrap.dedent(
            """
            from crossfade.providers.base import NodeGroupState, ScaleResult

            class AcmeProvider:
                def __init__(self, rack):
                    self.rack = rack
                    self.size = 0

                @property
                def name(self):
                    return f"acme/{self.rack}"

                async def describe(self):
                    return NodeGroupState(
                        desired=self.size, min_size=0, max_size=9, ready=self.size,
                        status="OK", updating=False,
                    )

                async def scale(self, *, desired, token):
                    previous, self.size = self.size, desired
                    return ScaleResult(desired=desired, changed=previous != desired)

            def build(placement, context):
                return AcmeProvider(placement["provider"]["acmeMetal"]["rack"])

            def build_wrong(placement, context):
                return "not a provider"
            """
        )
    )
    dist_info = tmp_path / "acme_metal-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-metal\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[crossfade.providers]\nAcmeMetal = acme_metal:build\nAcmeBroken = acme_metal:build_wrong\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


async def test_third_party_provider_is_found_through_its_entry_point(acme_package: Path) -> None:
    assert available_types()["AcmeMetal"] == "acme_metal:build"
    placement = {"name": "onprem", "provider": {"type": "AcmeMetal", "acmeMetal": {"rack": "r7"}}}
    provider = build_provider(placement, CONTEXT)
    assert provider.name == "acme/r7"
    assert (await provider.scale(desired=3, token="t")).changed
    assert (await provider.describe()).desired == 3


def test_factory_returning_something_else_is_refused(acme_package: Path) -> None:
    with pytest.raises(InvalidRequest, match="not a CapacityProvider"):
        build_provider({"name": "x", "provider": {"type": "AcmeBroken"}}, CONTEXT)


def test_built_in_types_fall_back_when_metadata_lacks_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_entry_point_targets", dict)
    assert available_types() == dict(BUILTIN_FACTORIES)
    assert isinstance(build_provider(api_placement("GKENodePool"), CONTEXT), GKENodePoolProvider)


def test_environment_context_uses_anonymous_credentials_only_for_a_loopback_test_server() -> None:
    local = ProviderContext.from_environment({"CROSSFADE_GKE_ENDPOINT": "http://127.0.0.1:8123"})
    assert isinstance(local.gke_credentials, AnonymousCredentials)
    private = ProviderContext.from_environment(
        {"CROSSFADE_GKE_ENDPOINT": "https://container.private.example.com"}
    )
    assert private.gke_endpoint == "https://container.private.example.com"
    assert private.gke_credentials is None  # ADC / Workload Identity
    assert ProviderContext.from_environment({}).gke_endpoint is None


def test_environment_context_passes_the_aws_endpoint_to_the_eks_factory() -> None:
    context = ProviderContext.from_environment({"CROSSFADE_AWS_ENDPOINT_URL": "http://127.0.0.1:5"})
    assert context.aws is not None
    assert context.aws.endpoint_url == "http://127.0.0.1:5"


def test_for_namespace_keeps_everything_else() -> None:
    moved = CONTEXT.for_namespace("team-b")
    assert moved.namespace == "team-b"
    assert moved.gke_endpoint == CONTEXT.gke_endpoint
    assert moved.management_client is not None
