"""Build one pool's runtime (probes, providers, routers) from its spec and the shared clients.

Providers come from ``crossfade.providers.registry`` when it is installed (entry-point group
``crossfade.providers``); a placement whose provider cannot be built is still probed and
reported, it just cannot be scaled (the Event says why). A placement with a ``template`` gets
a ``ProvisionedProvider`` (providers/provisioned.py) around a provisioner from
``providers.provisioner_registry``: its node group is created when first needed, and its
Node watch follows the node group's name once one exists.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from crossfade.api import Provider
from crossfade.api.policy import InferenceCheck
from crossfade.engine.observations import NodeObservation, ProbeResult, ProviderObservation
from crossfade.handlers.object_events import ObjectRef, post_event
from crossfade.handlers.observe import PlacementObservers
from crossfade.handlers.probe_feed import PoolProbeFeed, ScheduledProbes
from crossfade.handlers.reconcile import PoolRuntime
from crossfade.probes.breaker import BreakerRegistry
from crossfade.probes.cloud import CloudProbe
from crossfade.probes.inference import InferenceProbeConfig, probe_inference
from crossfade.probes.node_caches import NodeCacheRegistry, NodeGroupView, node_labels_for
from crossfade.probes.scheduler import ProbeSpec
from crossfade.probes.secret_headers import SecretHeaders, load_secret_headers
from crossfade.probes.specs import inference_spec
from crossfade.providers.base import CapacityProvider, NodeGroupState, ScaleResult
from crossfade.providers.instrumented import InstrumentedProvider, ProviderMetrics
from crossfade.providers.kubeconfig import KUBECONFIG_SECRET_KEY, api_client_from_secret
from crossfade.providers.provisioned import (
    ProvisionedProvider,
    ProvisionedTarget,
    ProvisioningEvent,
    ProvisioningMetrics,
    placement_with_node_group,
)
from crossfade.providers.provisioner_registry import provisioner_for
from crossfade.providers.provisioning import DeletionPolicyTag, Owner, template_from_placement
from crossfade.routers.base import RouterError
from crossfade.routers.factory import RouterContext, build_routers

log = logging.getLogger(__name__)

REGISTRY_MODULE = "crossfade.providers.registry"
REGISTRY_BUILDERS = ("build_provider", "create_provider", "provider_for")
# How long a first scale waits for the Node cache to tell a provider its pool's size.
NODE_SYNC_WAIT_S = 5.0
NODE_SYNC_POLL_S = 0.1
# Per provider type: its member field, the field naming its region/location, and the field
# naming its cluster ("kubeconfigSecretRef": the cluster reached through that Secret).
PROVIDER_SCOPE_FIELDS = {
    "EKSNodeGroup": ("eksNodeGroup", "region", "cluster"),
    "GKENodePool": ("gkeNodePool", "location", "cluster"),
    "ClusterAPI": ("clusterAPI", "namespace", "kubeconfigSecretRef"),
    "KarpenterNodePool": ("karpenterNodePool", "", "kubeconfigSecretRef"),
}

# (placement in wire form, pool namespace) -> provider; the namespace is where the
# provider reads kubeconfig Secrets.
ProviderFactory = Callable[[Mapping[str, Any], str], CapacityProvider]


class WiringError(Exception):
    """A pool's spec names something the operator cannot build; ``reason`` is CamelCase."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class SharedClients:
    """Clients built once at startup and shared by every pool (closed at cleanup)."""

    kube_api_client: Any = None  # kubernetes_asyncio ApiClient for the management cluster
    http: aiohttp.ClientSession | None = None
    provider_factory: ProviderFactory | None = None
    breakers: BreakerRegistry = field(default_factory=BreakerRegistry)
    router_clients: Mapping[str, Any] = field(default_factory=dict)
    provider_metrics: ProviderMetrics | None = None
    node_caches: NodeCacheRegistry = field(default_factory=NodeCacheRegistry)
    # Clients of the clusters the nodes join, by "namespace/secret/key" (closed at cleanup).
    cluster_clients: dict[str, Any] = field(default_factory=dict)
    # crossfade.providers.registry.ProviderContext: provisioners of templated placements get
    # the same one as their capacity providers (None: templated placements cannot be built).
    provider_context: Any = None
    provisioning_metrics: ProvisioningMetrics | None = None
    # The process's probe scheduler: each pool's inference probes run on their own period
    # (None: probes run inside each pass, as one-shot tools and unit tests want).
    probes: ScheduledProbes | None = None

    async def close(self) -> None:
        """Close every client this object owns (probe tasks first: they use ``http``)."""
        if self.probes is not None:
            await self.probes.close()
        await self.node_caches.close()
        for api in self.cluster_clients.values():
            await api.close()
        self.cluster_clients.clear()
        if self.http is not None:
            await self.http.close()
        if self.kube_api_client is not None:
            await self.kube_api_client.close()


class NodeObserver:
    """Node readiness of one placement from a shared watch-backed cache, started lazily.

    The cache lives in the cluster named by ``clusterRef`` (a kubeconfig Secret in the
    pool's namespace) or, without it, in the operator's own cluster. Until the cache has
    synced the observer reports nothing (the engine then keeps its last capacity reading).
    """

    def __init__(
        self,
        *,
        placement: Mapping[str, Any],
        namespace: str,
        clients: SharedClients,
        node_group: Callable[[], str | None] | None = None,
        on_change: Callable[[], object] | None = None,
    ) -> None:
        self.placement = str(placement.get("name"))
        # Called when one of the placement's Nodes changes readiness (wakes the pool's pass).
        self._on_change = on_change
        self._unlisten: Callable[[], None] | None = None
        self._wire = placement
        self._namespace = namespace
        self._clients = clients
        self._cache: NodeGroupView | None = None
        self._cluster_key = ""
        self._labels: dict[str, str] = {}
        # Templated placements: the node group crossfade created (None while none exists).
        self._node_group = node_group
        self._watched_group: str | None = None

    async def _start(self) -> NodeGroupView:
        ref = self._wire.get("clusterRef") or None
        if ref:
            key = str(ref.get("key") or KUBECONFIG_SECRET_KEY)
            self._cluster_key = f"{self._namespace}/{ref['name']}/{key}"
            api = self._clients.cluster_clients.get(self._cluster_key)
            if api is None:
                built = await api_client_from_secret(
                    self._clients.kube_api_client,
                    namespace=self._namespace,
                    name=str(ref["name"]),
                    key=key,
                )
                # Placements sharing a Secret start concurrently: the first client stored
                # is kept, a later one is closed (an overwritten one would leak its session).
                api = self._clients.cluster_clients.setdefault(self._cluster_key, built)
                if api is not built:
                    await built.close()
        else:
            self._cluster_key, api = "in-cluster", self._clients.kube_api_client
        wire = self._wire
        if self._watched_group is not None:
            wire = placement_with_node_group(wire, self._watched_group)
        self._labels = node_labels_for(Provider.model_validate(wire.get("provider") or {}))
        view = self._clients.node_caches.acquire(
            cluster=self._cluster_key, api=api, labels=self._labels
        )
        if self._on_change is not None:
            self._unlisten = view.listen(self._on_change)
        return view

    async def observe(self) -> NodeObservation | None:
        if self._node_group is not None:
            wanted = self._node_group()
            if wanted != self._watched_group:
                await self.close()
                self._watched_group = wanted
            if wanted is None:
                # No node group yet: no Nodes, truthfully (a cold standby).
                return NodeObservation(
                    placement=self.placement,
                    at=time.time(),
                    ready_nodes=0,
                    total_nodes=0,
                    allocatable_accelerators=0,
                )
        if self._cache is None:
            self._cache = await self._start()
        if not self._cache.synced:
            return None
        return self._cache.observe(placement=self.placement)

    async def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._cache is not None:
            self._cache = None
            await self._clients.node_caches.release(cluster=self._cluster_key, labels=self._labels)


class NodeSizedProvider:
    """Before its first describe or scale, tells a provider that cannot see its pool's size
    what its Nodes say (GKE fixed-size pools).

    Without it a restarted operator's first describe reports ``initialNodeCount``; the
    engine takes a cloud's desired size as the truth, so it would forget the size it
    asked for before the restart, plan the warm-standby size again and send it.
    """

    def __init__(
        self,
        inner: CapacityProvider,
        *,
        observe: Callable[[], Awaitable[NodeObservation | None]],
        adopt: Callable[[int], None],
        sync_wait_s: float = NODE_SYNC_WAIT_S,
    ) -> None:
        self.inner = inner
        self._observe = observe
        self._adopt = adopt
        self._sync_wait_s = sync_wait_s
        self._adopted = False
        self._waited = False  # only the first look waits for the Node cache to sync

    @property
    def name(self) -> str:
        return self.inner.name

    async def describe(self) -> NodeGroupState:
        if not self._adopted:
            await self._learn_size()
        return await self.inner.describe()

    async def scale(self, *, desired: int, token: str) -> ScaleResult:
        if not self._adopted:
            await self._learn_size()
        return await self.inner.scale(desired=desired, token=token)

    async def _learn_size(self) -> None:
        deadline = time.monotonic() + (0.0 if self._waited else self._sync_wait_s)
        self._waited = True
        while True:
            observation = await self._observe()
            if observation is not None:
                self._adopt(observation.total_nodes)
                self._adopted = True
                return
            if time.monotonic() >= deadline:
                log.warning("%s: Nodes not synced; its current size is unknown", self.name)
                return
            await asyncio.sleep(NODE_SYNC_POLL_S)


def registry_provider_factory(context: Any = None) -> ProviderFactory | None:
    """Return a factory backed by the providers registry, or None when it is not installed.

    ``context`` (a ``ProviderContext``) is narrowed to each pool's namespace, so kubeconfig
    Secrets are read where the pool lives.
    """
    try:
        module = importlib.import_module(REGISTRY_MODULE)
    except ImportError:
        return None
    for name in REGISTRY_BUILDERS:
        builder = getattr(module, name, None)
        if callable(builder):

            def factory(
                placement: Mapping[str, Any], namespace: str, _b: Any = builder
            ) -> CapacityProvider:
                scoped = context.for_namespace(namespace) if context is not None else None
                provider: CapacityProvider = _b(placement, scoped)
                return provider

            return factory
    log.warning("%s has none of %s; providers disabled", REGISTRY_MODULE, REGISTRY_BUILDERS)
    return None


def breaker_key(placement: Mapping[str, Any]) -> str:
    """Return the circuit breaker key of a placement's cloud API: type/region/cluster.

    Two clusters (or regions) of one cloud fail independently, so they must not share a
    breaker; placements in the same cluster do share one.
    """
    provider = placement.get("provider") or {}
    kind = str(provider.get("type") or "")
    if not kind:
        return f"placement/{placement.get('name')}"
    member, scope_field, cluster_field = PROVIDER_SCOPE_FIELDS.get(kind, ("", "", ""))
    details: Mapping[str, Any] = provider.get(member) or {} if member else {}
    scope = str(details.get(scope_field) or "") if scope_field else ""
    cluster_value = details.get(cluster_field) if cluster_field else None
    if isinstance(cluster_value, Mapping):
        cluster_value = cluster_value.get("name")
    return "/".join((kind, scope, str(cluster_value or "")))


def probe_config(
    placement: Mapping[str, Any],
    spec: Mapping[str, Any],
    *,
    headers: SecretHeaders | None = None,
) -> InferenceProbeConfig:
    """Return the inference probe settings of one placement (endpoint + healthCheck)."""
    endpoint = placement.get("endpoint") or {}
    url = endpoint.get("url")
    if not url:
        raise WiringError("NoEndpoint", f"placement {placement.get('name')} has no endpoint.url")
    raw = (spec.get("healthCheck") or {}).get("inference") or {}
    try:
        check = InferenceCheck.model_validate(raw)
    except ValueError as exc:
        raise WiringError("InvalidHealthCheck", f"healthCheck.inference: {exc}") from None
    return InferenceProbeConfig.from_check(check, url=str(url), headers=headers)


def probe_period_s(spec: Mapping[str, Any]) -> float:
    """Return healthCheck.inference.periodSeconds (the API's default when unset)."""
    raw = (spec.get("healthCheck") or {}).get("inference") or {}
    try:
        return float(InferenceCheck.model_validate(raw).period_seconds)
    except ValueError as exc:
        raise WiringError("InvalidHealthCheck", f"healthCheck.inference: {exc}") from None


async def probe_headers(
    spec: Mapping[str, Any], *, namespace: str, clients: SharedClients
) -> SecretHeaders | None:
    """Return the probe's headers from healthCheck.inference.headersSecretRef, if named."""
    ref = ((spec.get("healthCheck") or {}).get("inference") or {}).get("headersSecretRef")
    if not ref or clients.kube_api_client is None:
        return None
    return await load_secret_headers(
        clients.kube_api_client, namespace=namespace, name=str(ref.get("name"))
    )


def _probe_fn(
    session: aiohttp.ClientSession, *, placement: str, config: InferenceProbeConfig
) -> Callable[[], Any]:
    async def run() -> ProbeResult:
        return await probe_inference(session, placement=placement, config=config)

    return run


def _news_of(probes: ScheduledProbes | None, *, pool: str) -> Callable[[], object] | None:
    """The callback a Node readiness change calls: wake the pool's pass (None: no loops)."""
    if probes is None:
        return None

    def news() -> None:
        probes.news(pool)

    return news


def _cloud_fn(probe: CloudProbe) -> Callable[[], Any]:
    async def run() -> ProviderObservation | None:
        return await probe.observe()

    return run


def pool_notifier(
    clients: SharedClients, *, namespace: str, name: str, uid: str
) -> Callable[[str, ProvisioningEvent, str], Awaitable[None]]:
    """Return the callback that posts a templated placement's provisioning Events on the pool."""
    involved = ObjectRef.pool(namespace=namespace, name=name, uid=uid)

    async def notify(event_type: str, reason: ProvisioningEvent, message: str) -> None:
        if clients.kube_api_client is not None:
            await post_event(
                clients.kube_api_client,
                involved=involved,
                event_type=event_type,
                reason=reason.value,
                message=message,
            )

    return notify


def build_provisioned(
    placement: Mapping[str, Any],
    *,
    spec: Mapping[str, Any],
    namespace: str,
    name: str,
    uid: str,
    clients: SharedClients,
) -> ProvisionedProvider:
    """Return the provider of a templated placement: creates its node group when needed.

    Raises on anything that makes creation impossible (no provider factory or context, an
    unknown provider type, a template without what the cloud needs): the caller reports it.
    """
    factory = clients.provider_factory
    if factory is None or clients.provider_context is None:
        raise WiringError("ProvisioningUnavailable", "no provider registry in this process")
    pname = str(placement.get("name"))
    provider_type = str((placement.get("provider") or {}).get("type") or "")
    policy = str(spec.get("deletionPolicy") or DeletionPolicyTag.RETAIN.value)
    target = ProvisionedTarget(
        owner=Owner(namespace=namespace, pool=name, placement=pname, pool_uid=uid),
        template=template_from_placement(placement),
        deletion_policy=DeletionPolicyTag(policy),
        provider_type=provider_type,
        always_present=placement.get("lifecycle") == "AlwaysPresent",
    )

    def build_inner(node_group: str) -> CapacityProvider:
        return factory(placement_with_node_group(placement, node_group), namespace)

    return ProvisionedProvider(
        target=target,
        provisioner=provisioner_for(placement, clients.provider_context.for_namespace(namespace)),
        build_inner=build_inner,
        notify=pool_notifier(clients, namespace=namespace, name=name, uid=uid),
        metrics=clients.provisioning_metrics,
    )


async def build_runtime(
    *,
    spec: Mapping[str, Any],
    namespace: str,
    name: str,
    clients: SharedClients,
    uid: str = "",
) -> tuple[PoolRuntime, list[WiringError]]:
    """Return the pool's runtime and the problems met building it (each becomes an Event).

    Raises WiringError only when traffic routing cannot be built: steering traffic blindly
    is never safe, while a placement without a provider can still be observed. ``uid`` is
    the pool's: templated placements tag the node groups they create with it.
    """
    problems: list[WiringError] = []
    observers: list[PlacementObservers] = []
    providers: dict[str, CapacityProvider] = {}
    raw_providers: dict[str, CapacityProvider] = {}
    closers: list[Callable[[], Awaitable[None]]] = []
    scheduled: list[ProbeSpec] = []
    headers: SecretHeaders | None = None
    try:
        headers = await probe_headers(spec, namespace=namespace, clients=clients)
    except Exception as exc:  # a missing Secret is reported; probes run without headers
        problems.append(WiringError("ProbeHeadersUnavailable", str(exc)))
    for placement in spec.get("placements") or []:
        pname = str(placement.get("name"))
        probe = None
        if clients.http is not None:
            try:
                config = probe_config(placement, spec, headers=headers)
                if clients.probes is not None:
                    scheduled.append(
                        inference_spec(
                            clients.http,
                            placement=pname,
                            config=config,
                            period_s=probe_period_s(spec),
                        )
                    )
                else:
                    probe = _probe_fn(clients.http, placement=pname, config=config)
            except WiringError as exc:
                problems.append(exc)
        cloud = None
        provisioned: ProvisionedProvider | None = None
        if clients.provider_factory is not None and placement.get("provider"):
            try:
                built: CapacityProvider
                if placement.get("template"):
                    built = provisioned = build_provisioned(
                        placement,
                        spec=spec,
                        namespace=namespace,
                        name=name,
                        uid=uid,
                        clients=clients,
                    )
                else:
                    built = clients.provider_factory(placement, namespace)
            except Exception as exc:  # the registry's errors are its own; report any
                problems.append(WiringError("ProviderUnavailable", f"placement {pname}: {exc}"))
            else:
                closer = getattr(built, "aclose", None)
                if callable(closer):
                    closers.append(closer)
                provider = built
                if clients.provider_metrics is not None:
                    provider = InstrumentedProvider(
                        built,
                        provider_type=str((placement.get("provider") or {}).get("type")),
                        placement=pname,
                        metrics=clients.provider_metrics,
                    )
                providers[pname] = provider
                raw_providers[pname] = built
        nodes = None
        if clients.kube_api_client is not None and placement.get("provider"):
            follow = (lambda p=provisioned: p.node_group) if provisioned is not None else None
            node_observer = NodeObserver(
                placement=placement,
                namespace=namespace,
                clients=clients,
                node_group=follow,
                on_change=_news_of(clients.probes, pool=f"{namespace}/{name}"),
            )
            nodes = node_observer.observe
            closers.append(node_observer.close)
            adopt = getattr(raw_providers.get(pname), "adopt_observed_size", None)
            if callable(adopt) and pname in providers:
                providers[pname] = NodeSizedProvider(
                    providers[pname], observe=node_observer.observe, adopt=adopt
                )
        if pname in providers:
            # Built last so the cloud is read through the same wrappers it is scaled through
            # (NodeSizedProvider: a restarted process must not read initialNodeCount).
            cloud = _cloud_fn(
                CloudProbe(
                    placement=pname,
                    provider=providers[pname],
                    breaker=clients.breakers.for_provider(breaker_key(placement)),
                    wall_clock=time.time,
                )
            )
        observers.append(PlacementObservers(placement=pname, probe=probe, nodes=nodes, cloud=cloud))
    try:
        routers = build_routers(
            spec=spec,
            context=RouterContext(
                pool_namespace=namespace,
                pool_name=name,
                kube_api_client=clients.kube_api_client,
                clients=clients.router_clients,
            ),
        )
    except RouterError as exc:
        raise WiringError(exc.reason, exc.message) from exc
    feed: PoolProbeFeed | None = None
    if clients.probes is not None:
        # Made last, once nothing can fail: the feed takes the pool's probes over.
        feed = clients.probes.feed(f"{namespace}/{name}", scheduled)
        closers.append(feed.close)
    runtime = PoolRuntime(
        observers=observers,
        providers=providers,
        routers=routers,
        closers=closers,
        probe_feed=feed,
    )
    return runtime, problems
