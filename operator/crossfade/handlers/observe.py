"""Gather one pool's observations concurrently: probes, nodes, clouds and traffic layers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from crossfade.engine.observations import (
    NodeObservation,
    Observations,
    ProbeResult,
    ProviderObservation,
    TrafficObservation,
)
from crossfade.routers.base import RouteReading, RouterError, TrafficRouter

log = logging.getLogger(__name__)

ProbeFn = Callable[[], Awaitable[ProbeResult]]
NodesFn = Callable[[], Awaitable[NodeObservation | None]]
# None: no fresh observation this pass (a throttled describe); the engine keeps the last.
CloudFn = Callable[[], Awaitable[ProviderObservation | None]]


class ObservationFeed(Protocol):
    """Observations made outside the pass (scheduled probes), handed over once per pass."""

    async def drain(self) -> Observations: ...


@dataclass(frozen=True, slots=True)
class PlacementObservers:
    """How to observe one placement; any part may be missing (then it is not observed).

    ``probe`` runs inside the pass; the operator leaves it None and schedules the inference
    probe instead (handlers/probe_feed.py), so a slow endpoint cannot stretch a pass.
    """

    placement: str
    probe: ProbeFn | None = None
    nodes: NodesFn | None = None
    cloud: CloudFn | None = None


@dataclass(frozen=True, slots=True)
class TrafficReading:
    """The combined reading of every traffic layer and what went wrong reading them."""

    observation: TrafficObservation | None
    readings: tuple[tuple[str, RouteReading], ...]
    errors: tuple[str, ...]


async def read_traffic(routers: Sequence[TrafficRouter], *, now: float) -> TrafficReading:
    """Read every layer; the first layer that answers gives the weights the engine sees.

    Drift on any layer is reported; an unreadable layer leaves the error as evidence.
    """
    readings: list[tuple[str, RouteReading]] = []
    errors: list[str] = []
    for router in routers:
        try:
            readings.append((router.name, await router.read()))
        except RouterError as exc:
            errors.append(f"{router.name}: {exc.reason}: {exc.message}")
    if not readings:
        observation = TrafficObservation(at=now, weights=None, accepted=None) if routers else None
        return TrafficReading(observation=observation, readings=(), errors=tuple(errors))
    first = readings[0][1]
    accepted_values = [r.accepted for _, r in readings]
    accepted = (
        None if any(a is None for a in accepted_values) else all(bool(a) for a in accepted_values)
    )
    observation = TrafficObservation(
        at=now,
        weights=dict(first.weights) if first.weights is not None else None,
        accepted=accepted,
        drift=any(r.drift for _, r in readings),
    )
    return TrafficReading(observation=observation, readings=tuple(readings), errors=tuple(errors))


async def gather_observations(
    observers: Sequence[PlacementObservers],
    *,
    routers: Sequence[TrafficRouter],
    now: float,
    feed: ObservationFeed | None = None,
) -> tuple[Observations, TrafficReading]:
    """Run every observer of every placement at once and bundle the results.

    ``feed`` adds what scheduled probes delivered since the previous pass. An observer
    that raises (it should not: probes turn failures into observations) is logged and its
    failure kept as evidence in ``Observations.errors``.
    """
    scheduled = await feed.drain() if feed is not None else Observations()
    tasks: list[tuple[str, str, Awaitable[object]]] = []
    for item in observers:
        for kind, fn in (("probe", item.probe), ("nodes", item.nodes), ("cloud", item.cloud)):
            if fn is not None:
                tasks.append((item.placement, kind, fn()))
    results = await asyncio.gather(*(t[2] for t in tasks), return_exceptions=True)
    traffic = await read_traffic(routers, now=now)
    probes: list[ProbeResult] = list(scheduled.probes)
    nodes: list[NodeObservation] = list(scheduled.nodes)
    providers: list[ProviderObservation] = list(scheduled.providers)
    errors: list[str] = [*traffic.errors, *scheduled.errors]
    for (placement, kind, _), result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            log.warning("%s observer of %s failed: %r", kind, placement, result)
            errors.append(f"{placement}/{kind}: {type(result).__name__}: {result}")
        elif isinstance(result, ProbeResult):
            probes.append(result)
        elif isinstance(result, NodeObservation):
            nodes.append(result)
        elif isinstance(result, ProviderObservation):
            providers.append(result)
    observations = Observations(
        probes=tuple(probes),
        nodes=tuple(nodes),
        providers=tuple(providers),
        traffic=traffic.observation,
        errors=tuple(errors),
    )
    return observations, traffic


def weights_by_layer(traffic: TrafficReading) -> Mapping[str, Mapping[str, int] | None]:
    """Return each layer's weights (crossfade scale) by router name, for status and metrics."""
    return {name: reading.weights for name, reading in traffic.readings}
