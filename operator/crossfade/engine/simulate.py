"""Discrete-event simulator: replays a scripted outage timeline through the same ``decide``.

Pure: the scenario is a mapping (the CLI loads YAML), time is simulated, nothing sleeps.
Clouds are modelled with boot delays (optionally with nodes that join NotReady
``registerSeconds`` after the request, as real node groups do), stock limits (insufficient
capacity) and throttling; the observer can be switched off to exercise fail-static.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossfade.api import InvalidPoolError, parse_spec
from crossfade.engine.decide import decide
from crossfade.engine.observations import (
    NodeObservation,
    Observations,
    ProbeOutcome,
    ProbeResult,
    ProviderErrorKind,
    ProviderObservation,
    TrafficObservation,
)
from crossfade.engine.plan import EmitEvent, RecordTransition, ScalePlacement, SetWeights
from crossfade.engine.policy import PlacementPolicy, PoolPolicy, policy_from_spec
from crossfade.engine.state import PoolState
from crossfade.engine.weights import all_to

# Simulated wall clock starts here so absolute-time code paths are exercised.
SIM_EPOCH_S = 1_800_000_000.0
DEFAULT_BOOT_S = 180
DEFAULT_DURATION_S = 1800

FAULTS = frozenset(
    {
        "endpointDown",
        "endpointUp",
        "nodesNotReady",
        "nodesReady",
        "stockout",
        "stockoutEnd",
        "throttle",
        "throttleEnd",
        "observerDown",
        "observerUp",
    }
)


class ScenarioError(ValueError):
    """The scenario file is malformed (unknown fault, unknown placement, bad numbers)."""


@dataclass(frozen=True, slots=True)
class CloudModel:
    """How one placement's cloud behaves."""

    boot_s: int = DEFAULT_BOOT_S
    register_s: int | None = None  # node objects appear NotReady this long after the request
    initial_nodes: int | None = None  # None = the placement's min (standby: warm floor)


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """A scripted change to the world at ``at`` seconds."""

    at: int
    fault: str
    placement: str | None = None
    fraction: float = 1.0  # nodesNotReady: share of nodes that go NotReady
    limit: int = 0  # stockout: node count the cloud cannot grow past


@dataclass(frozen=True, slots=True)
class Scenario:
    """A pool spec, a cloud model per placement, a timeline of faults, expectations."""

    name: str
    description: str
    spec: Mapping[str, Any]
    policy: PoolPolicy
    duration_s: int
    tick_s: int
    clouds: Mapping[str, CloudModel]
    events: tuple[FaultEvent, ...]
    expect: tuple[Mapping[str, Any], ...] = ()


def scenario_from_mapping(data: Mapping[str, Any]) -> Scenario:
    """Validate and build a Scenario from a parsed scenario file."""
    spec = data.get("spec")
    if not isinstance(spec, Mapping):
        raise ScenarioError("scenario needs a 'spec' mapping (an InferencePool spec)")
    try:
        policy = policy_from_spec(parse_spec(spec))
    except InvalidPoolError as error:
        raise ScenarioError(str(error)) from None
    names = set(policy.names)
    clouds: dict[str, CloudModel] = {}
    for name, raw in (data.get("clouds") or {}).items():
        if name not in names:
            raise ScenarioError(f"clouds names unknown placement {name!r}")
        boot_s = int(raw.get("bootSeconds", DEFAULT_BOOT_S))
        register_s = int(raw["registerSeconds"]) if "registerSeconds" in raw else None
        if register_s is not None and not 0 <= register_s <= boot_s:
            raise ScenarioError(
                f"clouds.{name}.registerSeconds must be between 0 and bootSeconds ({boot_s})"
            )
        clouds[name] = CloudModel(
            boot_s=boot_s,
            register_s=register_s,
            initial_nodes=(int(raw["initialNodes"]) if "initialNodes" in raw else None),
        )
    duration_s = int(data.get("durationSeconds", DEFAULT_DURATION_S))
    events: list[FaultEvent] = []
    for raw in data.get("events") or ():
        fault = str(raw.get("fault"))
        if fault not in FAULTS:
            raise ScenarioError(f"unknown fault {fault!r}; known: {', '.join(sorted(FAULTS))}")
        placement = raw.get("placement")
        if placement is not None and placement not in names:
            raise ScenarioError(f"event names unknown placement {placement!r}")
        if placement is None and fault not in {"observerDown", "observerUp"}:
            raise ScenarioError(f"fault {fault!r} needs a placement")
        start = int(raw.get("at", 0))
        every = int(raw.get("every", 0))
        until = int(raw.get("until", start))
        times = range(start, until + 1, every) if every > 0 else (start,)
        for at in times:
            events.append(
                FaultEvent(
                    at=at,
                    fault=fault,
                    placement=placement,
                    fraction=float(raw.get("fraction", 1.0)),
                    limit=int(raw.get("limit", 0)),
                )
            )
    events.sort(key=lambda e: e.at)
    return Scenario(
        name=str(data.get("name", "scenario")),
        description=str(data.get("description", "")),
        spec=spec,
        policy=policy,
        duration_s=duration_s,
        tick_s=int(data.get("tickSeconds", policy.period_s)),
        clouds=clouds,
        events=tuple(events),
        expect=tuple(data.get("expect") or ()),
    )


@dataclass(slots=True)
class _Cloud:
    placement: PlacementPolicy
    boot_s: int
    ready_at: list[float]
    desired: int
    register_s: int | None = None
    endpoint_down: bool = False
    not_ready_fraction: float = 0.0
    stock_limit: int | None = None
    throttled: bool = False
    error: ProviderErrorKind | None = None
    error_message: str = ""

    def scale(self, desired: int, *, now: float) -> None:
        if self.throttled:
            self.error = ProviderErrorKind.THROTTLED
            self.error_message = "Rate exceeded"
            return
        self.desired = max(self.placement.min_nodes, min(self.placement.max_nodes, desired))
        if self.desired < len(self.ready_at):
            self.ready_at = sorted(self.ready_at)[: self.desired]
        self.grow(now=now)

    def grow(self, *, now: float) -> None:
        missing = self.desired - len(self.ready_at)
        if missing <= 0:
            if self.error is ProviderErrorKind.INSUFFICIENT_CAPACITY:
                self.error = None
            return
        room = (
            missing if self.stock_limit is None else max(0, self.stock_limit - len(self.ready_at))
        )
        self.ready_at.extend([now + self.boot_s] * min(room, missing))
        if room < missing:
            self.error = ProviderErrorKind.INSUFFICIENT_CAPACITY
            self.error_message = (
                f"InsufficientInstanceCapacity: could not launch {missing - room} "
                f"of {missing} nodes"
            )
        elif self.error is ProviderErrorKind.INSUFFICIENT_CAPACITY:
            self.error = None

    def booted(self, now: float) -> int:
        return sum(1 for t in self.ready_at if t <= now)

    def registered(self, now: float) -> int:
        """Node objects in the cluster: booted ones, plus booting ones already joined."""
        if self.register_s is None:
            return self.booted(now)
        lead_s = self.boot_s - self.register_s
        return sum(1 for t in self.ready_at if t - lead_s <= now)

    def ready(self, now: float) -> int:
        booted = self.booted(now)
        return booted - math.ceil(booted * self.not_ready_fraction)


@dataclass(frozen=True, slots=True)
class Row:
    """One tick of the timeline (``t`` seconds since the scenario start)."""

    t: int
    weights: Mapping[str, int]
    ready_accelerators: Mapping[str, int]
    desired_nodes: Mapping[str, int]
    health: Mapping[str, str]
    served_percent: float
    fail_static: bool
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Moment:
    """Something the engine did, at ``t`` seconds since the start."""

    t: int
    kind: str  # Transition | Event | Scale | Weights
    reason: str
    placement: str | None
    message: str


@dataclass(slots=True)
class SimulationResult:
    """The timeline plus every notable moment, with query helpers for tests and reports."""

    scenario: Scenario
    rows: list[Row] = field(default_factory=list)
    moments: list[Moment] = field(default_factory=list)
    final_state: PoolState | None = None
    decisions: int = 0

    def first(self, reason: str, *, after: int = -1, placement: str | None = None) -> int | None:
        """Time of the first moment with ``reason`` strictly after ``after``."""
        for moment in self.moments:
            wanted = placement is None or moment.placement == placement
            if moment.reason == reason and moment.t > after and wanted:
                return moment.t
        return None

    def count(self, reason: str) -> int:
        return sum(1 for m in self.moments if m.reason == reason)

    def row_at(self, t: int) -> Row:
        eligible = [row for row in self.rows if row.t <= t]
        if not eligible:
            raise KeyError(t)
        return eligible[-1]

    def first_weight_change(self, *, after: int) -> int | None:
        """First tick after ``after`` whose weights differ from the weights at ``after``."""
        before = self.row_at(after).weights
        for row in self.rows:
            if row.t > after and row.weights != before:
                return row.t
        return None

    def served_request_seconds_lost(self) -> float:
        """Integral of the unserved share of demand over time, in demand-seconds."""
        tick = self.scenario.tick_s
        return sum((100.0 - row.served_percent) / 100.0 * tick for row in self.rows)


def _apply_fault(cloud: _Cloud | None, event: FaultEvent, *, now: float) -> None:
    if cloud is None:
        return
    if event.fault == "endpointDown":
        cloud.endpoint_down = True
    elif event.fault == "endpointUp":
        cloud.endpoint_down = False
    elif event.fault == "nodesNotReady":
        cloud.not_ready_fraction = event.fraction
    elif event.fault == "nodesReady":
        cloud.not_ready_fraction = 0.0
    elif event.fault == "stockout":
        cloud.stock_limit = event.limit
    elif event.fault == "stockoutEnd":
        cloud.stock_limit = None
        cloud.grow(now=now)
    elif event.fault == "throttle":
        cloud.throttled = True
    elif event.fault == "throttleEnd":
        cloud.throttled = False
        if cloud.error is ProviderErrorKind.THROTTLED:
            cloud.error = None


def simulate(scenario: Scenario, *, initial_state: PoolState | None = None) -> SimulationResult:
    """Run the scenario tick by tick through ``decide``; deterministic."""
    policy = scenario.policy
    clouds: dict[str, _Cloud] = {}
    for placement in policy.placements:
        model = scenario.clouds.get(placement.name, CloudModel())
        start = model.initial_nodes
        if start is None:
            start = placement.max_nodes if placement is policy.preferred else placement.min_nodes
        start = max(placement.min_nodes, min(placement.max_nodes, start))
        clouds[placement.name] = _Cloud(
            placement=placement,
            boot_s=model.boot_s,
            register_s=model.register_s,
            ready_at=[-math.inf] * start,
            desired=start,
        )
    result = SimulationResult(scenario=scenario)
    state = initial_state
    # The traffic layer starts with everything on the preferred placement, as configured.
    weights: dict[str, int] | None = all_to(policy.preferred.name, policy.names)
    observer_up = True
    pending = list(scenario.events)
    for t in range(0, scenario.duration_s + 1, scenario.tick_s):
        now = SIM_EPOCH_S + t
        notes: list[str] = []
        while pending and pending[0].at <= t:
            event = pending.pop(0)
            if event.fault == "observerDown":
                observer_up = False
            elif event.fault == "observerUp":
                observer_up = True
            else:
                _apply_fault(clouds.get(event.placement or ""), event, now=now)
            notes.append(f"{event.fault}" + (f"({event.placement})" if event.placement else ""))
        for cloud in clouds.values():
            if cloud.stock_limit is None:
                cloud.grow(now=now)
        observations = (
            _observe(policy, clouds=clouds, weights=weights, now=now)
            if observer_up
            else Observations()
        )
        decision = decide(policy, state, observations, now)
        result.decisions += 1
        state = decision.state
        for action in decision.plan:
            if isinstance(action, SetWeights):
                weights = dict(action.weights)
                result.moments.append(Moment(t, "Weights", action.reason, None, action.message))
            elif isinstance(action, ScalePlacement):
                clouds[action.placement].scale(action.desired, now=now)
                result.moments.append(
                    Moment(t, "Scale", action.reason, action.placement, action.message)
                )
                notes.append(f"scale {action.placement}->{action.desired}")
            elif isinstance(action, RecordTransition):
                result.moments.append(
                    Moment(t, "Transition", action.reason, action.to_placement, action.message)
                )
                notes.append(f"{action.reason} {action.from_placement}->{action.to_placement}")
            elif isinstance(action, EmitEvent):
                result.moments.append(Moment(t, "Event", action.reason, None, action.message))
        for action in decision.proposed:
            if isinstance(action, (SetWeights, ScalePlacement)):
                result.moments.append(
                    Moment(t, "Proposed", f"Proposed{action.reason}", None, str(action))
                )
        result.rows.append(
            _row(policy, clouds=clouds, state=state, weights=weights, t=t, now=now, notes=notes)
        )
    result.final_state = state
    return result


def _observe(
    policy: PoolPolicy,
    *,
    clouds: Mapping[str, _Cloud],
    weights: Mapping[str, int] | None,
    now: float,
) -> Observations:
    probes: list[ProbeResult] = []
    nodes: list[NodeObservation] = []
    providers: list[ProviderObservation] = []
    for placement in policy.placements:
        cloud = clouds[placement.name]
        booted = cloud.booted(now)
        registered = cloud.registered(now)
        ready = cloud.ready(now)
        failing = cloud.endpoint_down or ready == 0
        probes.append(
            ProbeResult(
                placement=placement.name,
                at=now,
                outcome=ProbeOutcome.FAILING if failing else ProbeOutcome.HEALTHY,
                latency_ms=None if failing else 80.0,
                detail="connection refused" if failing else "",
            )
        )
        nodes.append(
            NodeObservation(
                placement=placement.name,
                at=now,
                ready_nodes=ready,
                total_nodes=registered,
                allocatable_accelerators=ready * placement.accelerators_per_node,
                not_ready=registered - ready,
            )
        )
        providers.append(
            ProviderObservation(
                placement=placement.name,
                at=now,
                desired=cloud.desired,
                ready=booted,
                min_size=placement.min_nodes,
                max_size=placement.max_nodes,
                updating=booted != cloud.desired,
                error=cloud.error,
                message=cloud.error_message if cloud.error else "",
            )
        )
        if cloud.error is ProviderErrorKind.THROTTLED:
            cloud.error = None  # a throttled call is reported once
    traffic = TrafficObservation(at=now, weights=dict(weights) if weights else None, accepted=True)
    return Observations(
        probes=tuple(probes), nodes=tuple(nodes), providers=tuple(providers), traffic=traffic
    )


def _row(
    policy: PoolPolicy,
    *,
    clouds: Mapping[str, _Cloud],
    state: PoolState,
    weights: Mapping[str, int] | None,
    t: int,
    now: float,
    notes: Sequence[str],
) -> Row:
    demand = policy.demand_accelerators
    served = 0.0
    ready_acc: dict[str, int] = {}
    for placement in policy.placements:
        cloud = clouds[placement.name]
        capacity = cloud.ready(now) * placement.accelerators_per_node
        ready_acc[placement.name] = capacity
        share = (weights or {}).get(placement.name, 0) / 100.0 * demand
        if not cloud.endpoint_down:
            served += min(share, float(capacity))
    return Row(
        t=t,
        weights=dict(weights or {}),
        ready_accelerators=ready_acc,
        desired_nodes={name: cloud.desired for name, cloud in clouds.items()},
        health={name: ps.health.value for name, ps in state.placements.items()},
        served_percent=round(100.0 * served / demand, 1) if demand else 0.0,
        fail_static=state.fail_static,
        notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """One checked expectation from a scenario's ``expect`` list."""

    expectation: Mapping[str, Any]
    ok: bool
    detail: str


def check_expectations(result: SimulationResult) -> list[ExpectationResult]:
    """Check every ``expect`` entry of the scenario against the simulated timeline.

    Forms: ``{reason, at, within}`` (first moment with reason at at +- within),
    ``{reason, after, before}`` (first moment in a window), ``{reason, never: true}``,
    ``{reason, count}`` (exact count), ``{weights, at}`` (weights at a tick),
    ``{servedPercentAtLeast, from, to}`` (served share over a window).
    """
    out: list[ExpectationResult] = []
    for expectation in result.scenario.expect:
        out.append(_check_one(result, expectation))
    return out


def _check_one(result: SimulationResult, exp: Mapping[str, Any]) -> ExpectationResult:
    reason = exp.get("reason")
    placement = exp.get("placement")
    if reason is not None and exp.get("never"):
        seen = result.first(str(reason), placement=placement)
        return ExpectationResult(exp, seen is None, f"{reason} first at {seen}")
    if reason is not None and "count" in exp:
        count = sum(
            1
            for m in result.moments
            if m.reason == reason and (placement is None or m.placement == placement)
        )
        return ExpectationResult(exp, count == int(exp["count"]), f"{reason} seen {count} times")
    if reason is not None:
        after = int(exp.get("after", -1))
        seen = result.first(str(reason), after=after, placement=placement)
        if seen is None:
            return ExpectationResult(exp, False, f"{reason} never seen after {after}")
        if "at" in exp:
            within = int(exp.get("within", 0))
            ok = abs(seen - int(exp["at"])) <= within
            return ExpectationResult(exp, ok, f"{reason} first at {seen}")
        ok = seen < int(exp.get("before", 10**9))
        return ExpectationResult(exp, ok, f"{reason} first at {seen}")
    if "weights" in exp:
        row = result.row_at(int(exp["at"]))
        wanted = {k: int(v) for k, v in exp["weights"].items()}
        got = {k: row.weights.get(k, 0) for k in wanted}
        return ExpectationResult(exp, got == wanted, f"weights at {row.t}: {dict(row.weights)}")
    if "servedPercentAtLeast" in exp:
        start, end = int(exp.get("from", 0)), int(exp.get("to", result.scenario.duration_s))
        window = [row for row in result.rows if start <= row.t <= end]
        worst = min((row.served_percent for row in window), default=0.0)
        ok = worst >= float(exp["servedPercentAtLeast"])
        return ExpectationResult(exp, ok, f"lowest served {worst}% in [{start}, {end}]")
    raise ScenarioError(f"unknown expectation form {dict(exp)}")
