"""Provider factory used while ``crossfade.providers.registry`` is not installed.

Builds the EKS and GKE providers directly from their modules. Endpoint overrides (tests,
VPC endpoints) come from the environment: ``CROSSFADE_AWS_ENDPOINT_URL`` and
``CROSSFADE_GKE_ENDPOINT``; credentials always come from the SDKs' default chains, and
with a GKE endpoint override anonymous credentials are used (a local test server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from crossfade.providers.base import CapacityProvider
from crossfade.providers.errors import InvalidRequest

AWS_ENDPOINT_ENV = "CROSSFADE_AWS_ENDPOINT_URL"
GKE_ENDPOINT_ENV = "CROSSFADE_GKE_ENDPOINT"


def _eks(placement: Mapping[str, Any]) -> CapacityProvider:
    from crossfade.providers.aws_eks import AwsProviderContext, build_eks_provider

    # The API names the member's fields cluster/nodegroup; the provider also reads
    # clusterName/nodegroupName. Offer both so either spelling resolves.
    provider = dict(placement.get("provider") or {})
    member = dict(provider.get("eksNodeGroup") or {})
    member.setdefault("clusterName", member.get("cluster"))
    member.setdefault("nodegroupName", member.get("nodegroup"))
    provider["eksNodeGroup"] = member
    context = AwsProviderContext(endpoint_url=os.environ.get(AWS_ENDPOINT_ENV) or None)
    return build_eks_provider({**placement, "provider": provider}, context)


def _gke(placement: Mapping[str, Any]) -> CapacityProvider:
    from crossfade.providers.gke import GKENodePoolProvider, GKENodePoolRef, make_client

    member = (placement.get("provider") or {}).get("gkeNodePool") or {}
    try:
        ref = GKENodePoolRef(
            project=str(member["project"]),
            location=str(member["location"]),
            cluster=str(member["cluster"]),
            node_pool=str(member["nodePool"]),
        )
    except KeyError as missing:
        raise InvalidRequest(
            f"provider.gkeNodePool lacks {missing}", code="InvalidPlacement"
        ) from None
    endpoint = os.environ.get(GKE_ENDPOINT_ENV) or None
    credentials = None
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    max_nodes = int((placement.get("nodes") or {}).get("max") or 1)
    return GKENodePoolProvider(
        ref=ref, client=make_client(endpoint=endpoint, credentials=credentials), max_nodes=max_nodes
    )


BUILDERS: Mapping[str, Callable[[Mapping[str, Any]], CapacityProvider]] = {
    "EKSNodeGroup": _eks,
    "GKENodePool": _gke,
}


def fallback_provider_factory(placement: Mapping[str, Any]) -> CapacityProvider:
    """Return the provider of one placement; raise InvalidRequest for unsupported types."""
    kind = str((placement.get("provider") or {}).get("type") or "")
    builder = BUILDERS.get(kind)
    if builder is None:
        raise InvalidRequest(
            f"provider type {kind!r} needs crossfade.providers.registry", code="NoProvider"
        )
    return builder(placement)
