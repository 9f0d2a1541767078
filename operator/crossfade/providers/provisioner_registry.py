"""Provisioner registry: ``provider.type`` -> factory of a templated placement's Provisioner.

The twin of ``providers/registry.py`` for creation: a factory is ``(placement, context) ->
Provisioner`` with the same arguments the capacity provider's factory gets (one placement in
wire form and the pool's ``ProviderContext``). Entry points of the group
``crossfade.provisioners`` win over the built-in table, so a third-party package can ship a
provisioner beside its provider. A provider type missing from both cannot carry a template:
``provisioner_for`` raises ``UnknownProvisionerType`` (the handler turns it into a condition).

To add a cloud: write ``build(placement, context) -> <YourProvisioner>`` in its module and add
one line to ``BUILTIN_PROVISIONERS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from crossfade.providers.errors import InvalidRequest
from crossfade.providers.provisioning import Provisioner
from crossfade.providers.registry import ProviderContext, placement_member

ENTRY_POINT_GROUP = "crossfade.provisioners"
BUILTIN_PROVISIONERS: Mapping[str, str] = {
    "EKSNodeGroup": "crossfade.providers.provisioner_registry:build_eks_provisioner",
    "ClusterAPI": "crossfade.providers.capi_provisioner:build",
    "GKENodePool": "crossfade.providers.gke_provisioner:build",
}

ProvisionerFactory = Callable[[Mapping[str, Any], ProviderContext], Provisioner]


class UnknownProvisionerType(InvalidRequest):
    """No installed package can create node groups for the placement's ``provider.type``."""


def available_provisioners() -> dict[str, str]:
    """Return every provider type that can provision, with its factory's ``module:attribute``."""
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**BUILTIN_PROVISIONERS, **entry_points}


def provisioner_factory_for(provider_type: str) -> ProvisionerFactory:
    """Return the provisioner factory of ``provider_type`` or raise UnknownProvisionerType."""
    targets = available_provisioners()
    target = targets.get(provider_type)
    if target is None:
        raise UnknownProvisionerType(
            f"crossfade cannot create node groups for provider type {provider_type!r}; "
            f"it can for: {', '.join(sorted(targets))}",
            code="ProvisioningUnsupported",
        )
    module_name, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise InvalidRequest(f"provisioner factory {target} is not callable")
    loaded: ProvisionerFactory = factory
    return loaded


def provisioner_for(placement: Mapping[str, Any], context: ProviderContext) -> Provisioner:
    """Build the provisioner of one templated placement (wire form), checking the protocol."""
    provider_type = str((placement.get("provider") or {}).get("type") or "")
    provisioner = provisioner_factory_for(provider_type)(placement, context)
    if not isinstance(provisioner, Provisioner):
        raise InvalidRequest(
            f"provisioner factory of {provider_type} returned {type(provisioner).__name__}, "
            "which is not a Provisioner"
        )
    return provisioner


def build_eks_provisioner(placement: Mapping[str, Any], context: ProviderContext) -> Provisioner:
    """Factory of ``EKSNodeGroup``: an EKS provisioner for the member's region and cluster."""
    from crossfade.providers.aws_api import EksApi
    from crossfade.providers.aws_eks import PLACEMENT_MEMBER, process_aws_context
    from crossfade.providers.aws_eks_provisioner import EksNodeGroupProvisioner

    aws = context.aws if context.aws is not None else process_aws_context()
    # Region and cluster only: a templated placement need not name a node group, the
    # provisioner names the ones it creates.
    member = placement_member(placement, PLACEMENT_MEMBER)
    region = member.get("region")
    cluster = member.get("cluster") or member.get("clusterName")
    if not region or not cluster:
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{PLACEMENT_MEMBER} needs region "
            "and cluster to create node groups",
            code="InvalidPlacement",
        )
    eks = EksApi.create(
        region=str(region),
        limiters=aws.limiters,
        endpoint_url=aws.endpoint_url,
        retry=aws.retry,
        observer=aws.observer,
        clients=aws.clients,
    )
    return EksNodeGroupProvisioner(cluster=str(cluster), eks=eks)
