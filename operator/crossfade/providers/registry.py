"""Provider registry: ``provider.type`` -> factory, via the ``crossfade.providers`` entry points.

A factory is ``(placement, context) -> CapacityProvider``: ``placement`` is one placement in
wire form (the camelCase mapping of the InferencePool spec), ``context`` a ``ProviderContext``.
Factories are looked up in the installed packages' entry points first, so a third party can
ship a provider in its own package (see docs/providers/writing-a-provider.md); the built-in
types fall back to the table below when the package metadata lacks them (an editable install
made before the entry points were declared, a vendored copy).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from crossfade.providers.base import CapacityProvider
from crossfade.providers.errors import InvalidRequest
from crossfade.providers.kubeconfig import ApiClientSource, as_source, default_api_client

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "crossfade.providers"
GKE_ENDPOINT_ENV = "CROSSFADE_GKE_ENDPOINT"
AWS_ENDPOINT_ENV = "CROSSFADE_AWS_ENDPOINT_URL"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BUILTIN_FACTORIES: Mapping[str, str] = {
    "EKSNodeGroup": "crossfade.providers.registry:build_eks_node_group",
    "GKENodePool": "crossfade.providers.gke:build",
    "ClusterAPI": "crossfade.providers.capi:build",
    "KarpenterNodePool": "crossfade.providers.karpenter:build",
}

ProviderFactory = Callable[[Mapping[str, Any], "ProviderContext"], CapacityProvider]


class UnknownProviderType(InvalidRequest):
    """No installed package provides the placement's ``provider.type``."""


class _LazyDefaultClient:
    """The operator's own cluster client, created on first use and shared afterwards."""

    def __init__(self) -> None:
        self._client: Any = None

    async def __call__(self) -> Any:
        if self._client is None:
            self._client = await default_api_client()
        return self._client


@dataclass(frozen=True)
class ProviderContext:
    """Process-wide plumbing factories may use; nothing here is a credential.

    ``namespace`` is the InferencePool's namespace, where kubeconfig Secrets are read.
    ``kube_api_client`` is the management cluster's kubernetes_asyncio client (None: in-cluster
    config, else ~/.kube/config, on first use). ``gke_endpoint`` / ``aws`` endpoints exist
    for private endpoints and tests; ``gke_credentials`` None means ADC / Workload Identity.
    """

    namespace: str = "default"
    kube_api_client: Any = None
    gke_endpoint: str | None = None
    gke_credentials: Any = None
    # crossfade.providers.aws_eks.AwsProviderContext; None = aws_eks.process_aws_context()
    aws: Any = None
    clock: Callable[[], float] = time.time
    _default_client: _LazyDefaultClient = field(
        default_factory=_LazyDefaultClient, repr=False, compare=False
    )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ProviderContext:
        """Return a context with the endpoint overrides the environment names, if any.

        ``CROSSFADE_GKE_ENDPOINT`` and ``CROSSFADE_AWS_ENDPOINT_URL`` point the clients at
        private endpoints (or the test doubles). Anonymous GKE credentials are used only for a
        plain-HTTP loopback endpoint, which can only be the local test server; any other
        endpoint still authenticates with ADC / Workload Identity.
        """
        env = os.environ if environ is None else environ
        gke_endpoint = env.get(GKE_ENDPOINT_ENV) or None
        gke_credentials = None
        if gke_endpoint and _is_loopback_http(gke_endpoint):
            from google.auth.credentials import AnonymousCredentials

            gke_credentials = AnonymousCredentials()
        aws = None
        aws_endpoint = env.get(AWS_ENDPOINT_ENV) or None
        if aws_endpoint:
            from crossfade.providers.aws_eks import AwsProviderContext

            aws = AwsProviderContext(endpoint_url=aws_endpoint)
        return cls(gke_endpoint=gke_endpoint, gke_credentials=gke_credentials, aws=aws)

    def for_namespace(self, namespace: str) -> ProviderContext:
        """Return this context for a pool in ``namespace`` (the default client stays shared)."""
        return replace(self, namespace=namespace, _default_client=self._default_client)

    def management_client(self) -> ApiClientSource:
        """Return a source of the management cluster's client."""
        if self.kube_api_client is not None:
            return as_source(self.kube_api_client)
        return self._default_client


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def placement_member(placement: Mapping[str, Any], member: str) -> Mapping[str, Any]:
    """Return ``placement.provider.<member>`` (wire form) or raise InvalidRequest."""
    provider = placement.get("provider") or {}
    found = provider.get(member)
    if not isinstance(found, Mapping):
        raise InvalidRequest(
            f"placement {placement.get('name')!r}: provider.{member} is missing",
            code="MissingProviderMember",
        )
    return found


def _entry_point_targets() -> dict[str, str]:
    # Scanning every installed package's metadata takes milliseconds and runs on the event
    # loop for each placement built, so the scan is kept per import path: a package put on
    # sys.path is found, one installed into an existing path after start-up needs a restart.
    return dict(_scan_entry_points(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _scan_entry_points(search_path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    del search_path  # the cache key only: metadata.entry_points reads sys.path itself
    return tuple((ep.name, ep.value) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))


def available_types() -> dict[str, str]:
    """Return every known provider type and the ``module:attribute`` of its factory."""
    return {**BUILTIN_FACTORIES, **_entry_point_targets()}


def _load(target: str) -> ProviderFactory:
    module_name, _, attribute = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    if not callable(factory):
        raise InvalidRequest(f"provider factory {target} is not callable")
    loaded: ProviderFactory = factory
    return loaded


def factory_for(provider_type: str) -> ProviderFactory:
    """Return the factory of ``provider_type``: an entry point, else the built-in table."""
    targets = available_types()
    target = targets.get(provider_type)
    if target is None:
        raise UnknownProviderType(
            f"no provider is installed for type {provider_type!r}; "
            f"known: {', '.join(sorted(targets))}",
            code="UnknownProviderType",
        )
    return _load(target)


def build_provider(
    placement: Mapping[str, Any], context: ProviderContext | None = None
) -> CapacityProvider:
    """Build the provider of one placement (wire form), checking it keeps the protocol."""
    provider_type = str((placement.get("provider") or {}).get("type") or "")
    provider = factory_for(provider_type)(placement, context or ProviderContext.from_environment())
    if not isinstance(provider, CapacityProvider):
        raise InvalidRequest(
            f"factory of {provider_type} returned {type(provider).__name__}, "
            "which is not a CapacityProvider"
        )
    log.info("provider built", extra={"type": provider_type, "provider": provider.name})
    return provider


def build_eks_node_group(
    placement: Mapping[str, Any], context: ProviderContext
) -> CapacityProvider:
    """Adapt the EKS factory (which takes its own AWS context) to the registry's signature."""
    from crossfade.providers.aws_eks import build_eks_provider, process_aws_context

    aws = context.aws if context.aws is not None else process_aws_context()
    # The API names the member's fields cluster/nodegroup; the EKS factory reads
    # clusterName/nodegroupName. Offer both spellings until the two agree.
    provider = dict(placement.get("provider") or {})
    member = dict(placement_member(placement, "eksNodeGroup"))
    member.setdefault("clusterName", member.get("cluster"))
    member.setdefault("nodegroupName", member.get("nodegroup"))
    return build_eks_provider({**placement, "provider": {**provider, "eksNodeGroup": member}}, aws)
