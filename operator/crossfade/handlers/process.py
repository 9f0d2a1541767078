"""The operator process: health server, Lease election, kopf with crossfade's handlers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from crossfade.handlers import settings as cf_settings
from crossfade.handlers.health import ProcessHealth, start_server
from crossfade.handlers.leadership import LeaseElector, LeaseRef
from crossfade.handlers.metrics import OperatorMetrics
from crossfade.handlers.pools import OperatorContext, register
from crossfade.handlers.probe_feed import ScheduledProbes
from crossfade.handlers.reaper_loop import (
    DEFAULT_INTERVAL_S,
    ReaperLoop,
    ReaperLoopMetrics,
    ReaperSettings,
    lease_ref,
)
from crossfade.handlers.wiring import SharedClients, registry_provider_factory
from crossfade.probes.inference import new_session
from crossfade.providers.instrumented import ProviderMetrics
from crossfade.providers.provisioned import ProvisioningMetrics
from crossfade.providers.ratelimit import RateLimiters
from crossfade.providers.reaper import DEFAULT_GRACE_PERIOD_S
from crossfade.providers.registry import ProviderContext

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LOST_LEADERSHIP = 3
COMPONENT = "crossfade"
# SIGTERM: the kubelet stopping the pod; SIGINT: Ctrl-C when run by hand.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Connections one ApiClient keeps to the management apiserver (kubernetes_asyncio's default
# is 100). Each kept-alive TLS connection costs ~300 KiB of RSS (asyncio's 256 KiB read buffer
# and OpenSSL's state; bench/results/client_memory.md), and pool passes that run at the same
# moment opened one each and kept them: ~1 per pool up to the cap. Requests beyond the cap
# wait for a free connection; 32 carry far more than the ~40 writes/s of 1000 pools.
API_CONNECTIONS = 32


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Options of `crossfade run`."""

    namespaces: tuple[str, ...] = ()
    health_host: str = "0.0.0.0"  # noqa: S104 (probes reach the pod IP)
    health_port: int = 8080
    lease_namespace: str = "default"
    lease_name: str = "crossfade-leader"
    identity: str = ""
    leader_election: bool = True
    period_override_s: float | None = None
    # Orphan node group reaper (handlers/reaper_loop.py); an interval of 0 turns it off.
    reaper_interval_s: float = DEFAULT_INTERVAL_S
    reaper_grace_period_s: float = DEFAULT_GRACE_PERIOD_S


def default_identity() -> str:
    """Return this replica's identity: the pod name when set, else host plus a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


async def make_api_client() -> Any:
    """Return a kubernetes_asyncio ApiClient: in-cluster config, else KUBECONFIG."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        await k8s_config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = API_CONNECTIONS
    return k8s.ApiClient(configuration)


class RouterClients(Mapping[str, Any]):
    """The clients every pool's traffic routers share: ``route53``, ``route53_limiter``,
    ``aws_endpoint_url``.

    The Route53 client is built when first read, i.e. by the first pool that routes with
    Route53, and then kept for every other pool: building it imports boto3 (~28 MiB when no
    EKS placement has) and loads Route53's service model (~10 MiB), which an operator whose
    pools route only through the Gateway API never needs. That first build blocks the event
    loop once (a few hundred ms). It uses ``aws_endpoint_url``, the endpoint the EKS
    providers use too, so routers never reach real AWS when the operator is pointed at a
    private endpoint or a test server.
    """

    KEYS = ("route53", "route53_limiter", "aws_endpoint_url")

    def __init__(self, *, aws_endpoint_url: str | None) -> None:
        self._values: dict[str, Any] = {
            # One bucket for every router: Route53 limits are per account.
            "route53_limiter": RateLimiters().bucket("route53"),
            "aws_endpoint_url": aws_endpoint_url,
        }
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> Any:
        if key == "route53":
            with self._lock:
                if key not in self._values:
                    from crossfade.routers.route53 import make_route53_client

                    self._values[key] = make_route53_client(
                        endpoint_url=self._values["aws_endpoint_url"]
                    )
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    @property
    def route53_built(self) -> bool:
        """Whether a router has asked for the Route53 client yet."""
        return "route53" in self._values


def router_clients(provider_context: ProviderContext) -> RouterClients:
    """Return the clients the traffic routers get, on the providers' AWS endpoint.

    ``CROSSFADE_AWS_ENDPOINT_URL`` is read once, by ``ProviderContext.from_environment``.
    """
    aws = provider_context.aws
    return RouterClients(aws_endpoint_url=aws.endpoint_url if aws is not None else None)


async def run_operator(config: RunConfig) -> int:
    """Run until stopped (SIGINT/SIGTERM) or leadership is lost; return an exit code."""
    metrics = OperatorMetrics()
    health = ProcessHealth()
    identity = config.identity or default_identity()
    runner = await start_server(
        metrics=metrics, health=health, host=config.health_host, port=config.health_port
    )
    api_client = await make_api_client()
    elector: LeaseElector | None = None
    stop_flag = asyncio.Event()
    lost = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The operator runs on Linux with the default asyncio loop, which supports these.
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_flag.set)
    keeper: asyncio.Task[None] | None = None
    try:
        if config.leader_election:
            elector = LeaseElector(
                api_client=api_client,
                ref=LeaseRef(
                    namespace=config.lease_namespace, name=config.lease_name, identity=identity
                ),
            )
            health.standby = True
            log.info("waiting for leadership", extra={"identity": identity})
            ticker = asyncio.create_task(_tick_while_waiting(health, stop_flag))
            acquired = await elector.acquire(stop=stop_flag)
            ticker.cancel()
            if not acquired:
                return EXIT_OK
            health.standby = False

            def on_lost() -> None:
                lost.set()
                stop_flag.set()

            keeper = asyncio.create_task(elector.keep(on_lost=on_lost))
        health.leader = True
        metrics.leader.set(1)
        log.info("leading; starting kopf", extra={"identity": identity})
        await _run_kopf(
            config, metrics=metrics, health=health, stop_flag=stop_flag, identity=identity
        )
    finally:
        metrics.leader.set(0)
        health.leader = False
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if elector is not None and not lost.is_set():
            await elector.release()
        await api_client.close()
        await runner.cleanup()
    return EXIT_LOST_LEADERSHIP if lost.is_set() else EXIT_OK


async def _tick_while_waiting(health: ProcessHealth, stop: asyncio.Event) -> None:
    while not stop.is_set():
        health.tick()
        await asyncio.sleep(1.0)


async def _run_kopf(
    config: RunConfig,
    *,
    metrics: OperatorMetrics,
    health: ProcessHealth,
    stop_flag: asyncio.Event,
    identity: str,
) -> None:
    context = OperatorContext(
        metrics=metrics, health=health, period_override_s=config.period_override_s
    )
    registry = kopf.OperatorRegistry()
    ready_flag = asyncio.Event()
    reaper_settings = ReaperSettings(
        interval_s=config.reaper_interval_s, grace_period_s=config.reaper_grace_period_s
    )
    reaper_metrics = ReaperLoopMetrics(metrics.registry) if reaper_settings.enabled else None
    reaper_stop = asyncio.Event()
    reaper_tasks: list[tuple[ReaperLoop, asyncio.Task[None]]] = []

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        cf_settings.configure(settings, component=COMPONENT, instance=identity)
        kube_api_client = await make_api_client()
        provider_context = dataclasses.replace(
            ProviderContext.from_environment(), kube_api_client=kube_api_client
        )
        context.clients = SharedClients(
            kube_api_client=kube_api_client,
            http=new_session(),
            provider_factory=registry_provider_factory(provider_context),
            router_clients=router_clients(provider_context),
            provider_metrics=ProviderMetrics(registry=metrics.registry),
            provider_context=provider_context,
            provisioning_metrics=ProvisioningMetrics(metrics.registry),
            probes=ScheduledProbes(on_news=context.wakeups.nudge),
        )
        if reaper_metrics is not None:
            # kopf (and so this loop) runs only while this replica holds the Lease.
            reaper = ReaperLoop(
                api_client=kube_api_client,
                provider_context=provider_context,
                settings=reaper_settings,
                metrics=reaper_metrics,
                lease=lease_ref(namespace=config.lease_namespace, name=config.lease_name),
                namespaces=config.namespaces,
            )
            reaper_tasks.append((reaper, asyncio.create_task(reaper.run(stop=reaper_stop))))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        reaper_stop.set()
        for reaper, task in reaper_tasks:
            task.cancel()  # a sweep is idempotent: an interrupted one is redone next time
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await reaper.aclose()
        for _generation, pool_runtime in context.runtimes.values():
            await pool_runtime.close()
        await context.clients.close()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        return await kopf.login_via_async_client(**kwargs)

    @kopf.on.probe(registry=registry, id="ticks")
    def probe_tick(**_: Any) -> bool:
        health.tick()
        return True

    register(registry, context)

    async def mark_ready() -> None:
        await ready_flag.wait()
        health.kopf_ready = True

    marker = asyncio.create_task(mark_ready())
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        marker.cancel()
        health.kopf_ready = False
