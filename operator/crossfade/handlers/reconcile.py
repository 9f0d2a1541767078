"""One observe -> decide -> act pass for one pool, free of kopf so it can be tested directly.

The pass returns what the kopf layer must write (status merge patch, engine-state
annotation, manual-control annotation cleanup) and the Events to post; each is empty when
nothing changed, so a pool at steady state causes no writes at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossfade.engine.decide import Decision, decide
from crossfade.engine.observations import Observations
from crossfade.engine.plan import (
    Action,
    EmitEvent,
    EventType,
    RecordTransition,
    ScalePlacement,
    SetWeights,
    is_effect,
)
from crossfade.engine.policy import PoolPolicy, policy_from_spec
from crossfade.engine.state import PoolState
from crossfade.engine.weights import WEIGHT_TOTAL, all_to
from crossfade.handlers import manual as manual_mod
from crossfade.handlers.executor import ActionFailure, ExecutionReport, ExecutorMetrics, execute
from crossfade.handlers.manual import ManualControl, ManualControlError
from crossfade.handlers.observe import (
    ObservationFeed,
    PlacementObservers,
    TrafficReading,
    gather_observations,
)
from crossfade.handlers.status import (
    merge_conditions,
    merge_history,
    placement_summaries,
    status_patch,
)
from crossfade.providers.base import CapacityProvider
from crossfade.providers.provisioned import node_group_of
from crossfade.routers.base import TrafficRouter

log = logging.getLogger(__name__)

STATE_ANNOTATION = "crossfade.dev/engine-state"
# Per-probe facts that change every pass; persisting them would write at steady state.
VOLATILE_PLACEMENT_KEYS = frozenset(
    {
        "lastProbeAt",
        "latencyMs",
        "lastSeenAt",
        "capacityAt",
        "lastProviderAt",
        "consecutiveSuccesses",
        "consecutiveFailures",
        "providerErrorAt",
    }
)
# Refreshed every pass while a placement is needed (carries traffic or planned capacity),
# so persisted only once it stops: then it is the frozen start of the scale-down delay.
# The persisted ``needed`` flag tells a restarted engine that the delay has not begun yet.
NEEDED_KEY = "needed"
LAST_NEEDED_KEY = "lastNeededAt"
VOLATILE_POOL_KEYS = frozenset({"decisions"})
DRILL_REASON = "Drill"
DRILL_ENDED_REASON = "DrillEnded"


# What makes two Events the same report: type, reason and message.
EventKey = tuple[str, str, str]


def event_key(event: EmitEvent) -> EventKey:
    """Return the identity of an Event report (type, reason, message)."""
    return str(event.type), event.reason, event.message


def new_events(
    events: Sequence[EmitEvent], *, previous: frozenset[EventKey]
) -> tuple[list[EmitEvent], frozenset[EventKey]]:
    """Return the Events to post (those the previous pass did not report) and this pass's keys.

    A report that lasts word for word (an engine Event a pass repeats, a failure whose
    message stays the same) is posted when it starts, and again only after a pass without
    it; posting it every pass wrote an Event per pool per period at steady state. Failures
    whose message changes from pass to pass are handled before this by ``news_of``.
    """
    fresh: list[EmitEvent] = []
    seen: set[EventKey] = set()
    for event in events:
        key = event_key(event)
        if key in previous or key in seen:
            continue
        seen.add(key)
        fresh.append(event)
    return fresh, frozenset(event_key(event) for event in events)


@dataclass(slots=True)
class PoolRuntime:
    """The per-pool objects the pass talks to, built once per pool by the wiring.

    ``state`` is the engine's memory between passes. It lives in memory while the process
    runs (per-probe counters included); the annotation only carries its durable part
    across restarts, so steady-state passes write nothing.
    """

    observers: Sequence[PlacementObservers]
    providers: Mapping[str, CapacityProvider]
    routers: Sequence[TrafficRouter]
    state: PoolState | None = None
    manual_seen: str = "automatic"
    closers: Sequence[Callable[[], Awaitable[None]]] = ()
    # Scheduled inference probes (handlers/probe_feed.py); each pass drains what arrived.
    probe_feed: ObservationFeed | None = None
    # The failures of the last pass (``failure_key``): the same failure again is no news
    # and posts no second Event (a refused scale is retried every pass until it lands).
    standing_failures: frozenset[tuple[str, str]] = frozenset()
    # The Events the previous pass had to report (posted or not); see ``new_events``.
    last_events: frozenset[EventKey] = frozenset()
    # Scales the previous pass asked for and the cloud refused for now (``refused_scales``).
    refused_scales: frozenset[tuple[str, int]] = frozenset()

    async def close(self) -> None:
        """Release what the runtime holds (node watches); the pool's state stays."""
        for closer in self.closers:
            await closer()


@dataclass(slots=True)
class PassOutcome:
    """What one pass decided and what the kopf layer has to write."""

    decision: Decision | None
    report: ExecutionReport | None
    status_patch: dict[str, Any]
    annotations_patch: dict[str, str | None]
    events: list[EmitEvent] = field(default_factory=list)
    manual: ManualControl | None = None
    observations: Observations | None = None
    traffic: TrafficReading | None = None


def durable_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """Return the engine state without per-probe facts (what is worth persisting)."""
    out = {k: v for k, v in state.items() if k not in VOLATILE_POOL_KEYS}
    out["placements"] = {
        name: _durable_placement(facts) for name, facts in (state.get("placements") or {}).items()
    }
    return out


def _durable_placement(facts: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in facts.items() if k not in VOLATILE_PLACEMENT_KEYS}
    if out.get(NEEDED_KEY):
        out.pop(LAST_NEEDED_KEY, None)
    return out


def load_state(annotations: Mapping[str, str] | None) -> PoolState | None:
    """Return the persisted engine state, or None when absent or unreadable (start fresh)."""
    raw = (annotations or {}).get(STATE_ANNOTATION)
    if not raw:
        return None
    try:
        return PoolState.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable %s: %s", STATE_ANNOTATION, exc)
        return None


def dump_state(state: PoolState) -> str:
    """Serialize the durable part of the state compactly and deterministically."""
    return json.dumps(durable_state(state.to_dict()), sort_keys=True, separators=(",", ":"))


def apply_manual_control(
    actions: Sequence[Action],
    *,
    control: ManualControl,
    policy: PoolPolicy,
    current_weights: Mapping[str, int] | None,
    current_desired: Mapping[str, int | None],
) -> tuple[list[Action], bool]:
    """Rewrite the engine's plan to honour pin and forced failover; return (plan, hold).

    ``hold`` is True when frozen: then no effect is carried out at all. A pin (or a forced
    failover, which becomes a pin once carried out) replaces the engine's weight moves
    with "everything on the pinned placement" and never scales that placement down.
    """
    if control.frozen and not control.resume:
        return list(actions), True
    target = control.force_failover_to or control.pinned_to
    if target is None:
        return list(actions), False
    placement = policy.placement(target)
    wanted_nodes = placement.nodes_for(policy.demand_accelerators)
    observed_nodes = current_desired.get(target)
    floor = max(wanted_nodes, observed_nodes or 0)
    kept: list[Action] = []
    for action in actions:
        if isinstance(action, SetWeights):
            continue
        if isinstance(action, ScalePlacement) and action.placement == target:
            if action.desired < floor:
                continue  # the engine's scale-down (e.g. TrafficLeft after its own failback)
            observed_nodes = max(observed_nodes or 0, action.desired)
        kept.append(action)
    if observed_nodes is None or observed_nodes < wanted_nodes:
        kept.insert(
            0,
            ScalePlacement(
                placement=target,
                desired=wanted_nodes,
                reason="ManualFailover" if control.force_failover_to else "Pinned",
                message=f"manual control ({control.describe()}) needs capacity on {target}",
            ),
        )
    pinned = all_to(target, policy.names)
    if dict(current_weights or {}) != pinned:
        reason = "Pinned"
        if control.force_failover_to:
            reason = DRILL_REASON if control.drill else "ManualFailover"
        kept.append(
            SetWeights(
                weights=pinned,
                reason=reason,
                message=f"all traffic to {target} ({control.describe()})",
            )
        )
    return kept, False


def desired_before_plan(
    plan: Sequence[Action],
    *,
    desired: Mapping[str, int | None],
    previous: PoolState | None,
) -> dict[str, int | None]:
    """Return each placement's desired node count as it stood before the engine's resizes.

    The engine's state already holds the sizes its own ScalePlacement actions ask for; manual
    control must compare against the size the node group has now, or a scale-down the engine
    planned (TrafficLeft once it moved its own weights back) would look like no change.
    """
    out = dict(desired)
    for action in plan:
        if isinstance(action, ScalePlacement) and action.placement in out:
            before = previous.placements.get(action.placement) if previous is not None else None
            out[action.placement] = before.desired if before is not None else None
    return out


def drill_transition(
    *,
    control: ManualControl,
    target: str,
    current_weights: Mapping[str, int] | None,
    now: float,
) -> RecordTransition:
    """Return the history entry of a drill whose forced failover has just landed."""
    before = dict(current_weights or {})
    source = max(before, key=lambda name: before[name]) if before else None
    if source == target:
        source = None
    return RecordTransition(
        at=now,
        from_placement=source,
        to_placement=target,
        reason=DRILL_REASON,
        message=f"drill {control.drill}: all traffic to {target}",
    )


def failure_key(failure: ActionFailure) -> tuple[str, str]:
    """What makes a failure the same one again: its reason and the placement it hit."""
    placement = getattr(failure.action, "placement", None)
    return failure.reason, str(placement) if placement is not None else type(
        failure.action
    ).__name__


def news_of(report: ExecutionReport, runtime: PoolRuntime) -> list[EmitEvent]:
    """The report's Events minus failures that already stood at the previous pass.

    A failure Event is posted when the failure starts or changes reason; while the same
    failure repeats pass after pass (a retried scale the cloud keeps refusing) the status
    condition and the log carry it, not a new Event per pass.
    """
    repeated = {
        (failure.reason, failure.message)
        for failure in report.failures
        if failure_key(failure) in runtime.standing_failures
    }
    runtime.standing_failures = frozenset(failure_key(f) for f in report.failures)
    return [
        event
        for event in report.events
        if not (event.type is EventType.WARNING and (event.reason, event.message) in repeated)
    ]


def refused_scales(report: ExecutionReport) -> frozenset[tuple[str, int]]:
    """Return (placement, desired) of the scales this pass asked for that failed retryably."""
    return frozenset(
        (failure.action.placement, failure.action.desired)
        for failure in report.failures
        if isinstance(failure.action, ScalePlacement) and failure.retryable
    )


def only_retries(effects: Sequence[Action], runtime: PoolRuntime) -> bool:
    """Return True when every effect is a scale the previous pass asked for and was refused.

    Such a retry needs no write-ahead of its intent: the previous pass wrote it, the
    refusal took it back (``forget_failed_scale_requests``), and the retry carries the same
    idempotency token while the engine's transition count stays (``scale_token``), so a
    process killed after the call and restarted asks again harmlessly. Writing it anyway
    wrote the engine-state annotation twice per pass (intent, then its withdrawal) for as
    long as the cloud kept refusing.
    """
    return all(
        isinstance(effect, ScalePlacement)
        and (effect.placement, effect.desired) in runtime.refused_scales
        for effect in effects
    )


def forget_failed_scale_requests(
    state: PoolState, report: ExecutionReport, *, previous: PoolState | None = None
) -> None:
    """Un-record scale requests the cloud refused for now (throttled, unavailable).

    The engine notes a placement's new size when it plans the scale. When the call fails
    with a retryable error, keeping that note would make the next pass believe the size
    was already asked for and never ask again; forgetting it lets the next observation of
    the cloud (or, without one, the next decision) ask again.

    When and from what the request was made (``requestedAt``, ``scaleUpAt`` and the ready
    count before it) go back to ``previous``'s values as well: nothing was asked of the
    cloud, so no node boot grace starts, and a request refused pass after pass leaves
    the durable state (the engine-state annotation) as it was instead of rewriting it
    with a new time on every retry.
    """
    for failure in report.failures:
        action = failure.action
        if not (isinstance(action, ScalePlacement) and failure.retryable):
            continue
        placement = state.placements.get(action.placement)
        if placement is None or placement.desired != action.desired:
            continue
        placement.desired = None
        before = previous.placements.get(action.placement) if previous is not None else None
        placement.requested_at = before.requested_at if before is not None else None
        placement.scale_up_at = before.scale_up_at if before is not None else None
        placement.ready_before_scale_up = (
            before.ready_before_scale_up if before is not None else None
        )


async def reconcile_once(
    *,
    body: Mapping[str, Any],
    runtime: PoolRuntime,
    now: float,
    metrics: ExecutorMetrics | None = None,
    persist: Callable[[Mapping[str, str | None]], Awaitable[None]] | None = None,
) -> PassOutcome:
    """Observe the pool, decide, act, and return what to write; raises nothing expected.

    ``persist`` writes an annotations patch at once; given, the engine state is written
    ahead of the effects that change the world.
    """
    metadata = body.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    spec: Mapping[str, Any] = body.get("spec") or {}
    stored_status: Mapping[str, Any] = body.get("status") or {}
    generation = metadata.get("generation")
    policy = policy_from_spec(spec)
    events: list[EmitEvent] = []
    try:
        control = manual_mod.parse_manual_control(annotations, placements=policy.names)
    except ManualControlError as exc:
        events.append(EmitEvent(EventType.WARNING, exc.reason, str(exc)))
        control = ManualControl(frozen=True)  # do nothing automatic until it is fixed

    if control.describe() != runtime.manual_seen:
        events.append(
            EmitEvent(
                EventType.NORMAL,
                "ManualControl",
                f"manual control: {control.describe()} (was {runtime.manual_seen})",
            )
        )
        runtime.manual_seen = control.describe()

    observations, traffic = await gather_observations(
        runtime.observers, routers=runtime.routers, now=now, feed=runtime.probe_feed
    )
    previous = runtime.state if runtime.state is not None else load_state(annotations)
    decision = decide(spec, previous, observations, now)
    runtime.state = decision.state
    current_weights = traffic.observation.weights if traffic.observation else None
    desired = {
        name: (
            decision.state.placements[name].desired if name in decision.state.placements else None
        )
        for name in policy.names
    }
    actions, hold = apply_manual_control(
        decision.plan,
        control=control,
        policy=policy,
        current_weights=current_weights,
        current_desired=desired_before_plan(decision.plan, desired=desired, previous=previous),
    )
    for name in policy.names:
        dropped = [
            a for a in decision.plan if isinstance(a, ScalePlacement) and a.placement == name
        ]
        if dropped and not any(a in actions for a in dropped) and previous is not None:
            # Manual control refused the engine's resize: remember the size that stays.
            before = previous.placements.get(name)
            if before is not None and name in decision.state.placements:
                decision.state.placements[name].desired = before.desired
    persisted = annotations.get(STATE_ANNOTATION)
    effects = [a for a in actions if is_effect(a)]
    if persist is not None and effects and not hold and not only_retries(effects, runtime):
        # Write-ahead: the intent is stored before any effect, so a process killed between
        # the cloud call and the status write resumes knowing what it already asked for.
        intent = dump_state(decision.state)
        if intent != persisted:
            await persist({STATE_ANNOTATION: intent})
            persisted = intent
    report = await execute(
        actions,
        pool_uid=str(metadata.get("uid") or ""),
        epoch=len(decision.state.transitions),
        providers=runtime.providers,
        routers=runtime.routers,
        hold_effects=hold,
        metrics=metrics,
    )
    events.extend(news_of(report, runtime))
    forget_failed_scale_requests(decision.state, report, previous=previous)
    runtime.refused_scales = refused_scales(report)
    if report.weights_written is not None:
        decision.state.weights = dict(report.weights_written)
    elif current_weights is not None and any(isinstance(a, SetWeights) for a in decision.plan):
        # The engine's move was not carried out (pinned, frozen, or the write failed): it
        # must remember what the traffic layer holds, or after a resume it would believe
        # its move already made and never write it.
        decision.state.weights = dict(current_weights)

    state_dict = decision.state.to_dict()
    weights = report.weights_written or current_weights or decision.state.weights
    conditions = merge_conditions(
        stored_status.get("conditions"),
        report.conditions,
        now=now,
        observed_generation=generation,
    )
    placements = placement_summaries(names=policy.names, state=state_dict, weights=weights)
    for item in placements:
        # Templated placements: the node group crossfade created or adopted, once one exists.
        node_group = node_group_of(runtime.providers.get(str(item["name"])))
        if node_group is not None:
            item["nodeGroup"] = node_group
    target = control.force_failover_to
    forced_landed = target is not None and (
        (report.weights_written or current_weights or {}).get(target, 0) == WEIGHT_TOTAL
    )
    transitions = list(report.transitions)
    if forced_landed and target is not None and control.drill and not control.resume:
        transitions.append(
            drill_transition(
                control=control, target=target, current_weights=current_weights, now=now
            )
        )
    if control.resume and control.drill:
        events.append(
            EmitEvent(
                EventType.NORMAL,
                DRILL_ENDED_REASON,
                f"drill {control.drill} ended; automatic control resumes",
            )
        )
    history = merge_history(stored_status.get("history"), transitions)
    healthy = sum(1 for p in placements if p["health"] == "Healthy")
    built: dict[str, Any] = {
        "preferredPlacement": policy.preferred.name,
        "healthyPlacements": f"{healthy}/{len(placements)}",
        "placements": placements,
        "conditions": conditions,
    }
    if generation is not None:
        built["observedGeneration"] = generation
    if history:
        built["history"] = history
    failovers = [h for h in history if h.get("from") == policy.preferred.name]
    if failovers:
        built["lastFailoverTime"] = failovers[0]["time"]
    elif stored_status.get("lastFailoverTime"):
        built["lastFailoverTime"] = stored_status["lastFailoverTime"]
    active = decision.state.active_placement(policy.names)
    if active is not None:
        built["activePlacement"] = active

    annotations_patch: dict[str, str | None] = {}
    new_state = dump_state(decision.state)
    if persisted != new_state:
        annotations_patch[STATE_ANNOTATION] = new_state
    if forced_landed and target is not None:
        # A forced failover becomes a pin, so the engine does not fail back on its own.
        annotations_patch[manual_mod.PIN] = target
    annotations_patch.update(manual_mod.cleanup_patch(control, done_force=forced_landed))
    events, runtime.last_events = new_events(events, previous=runtime.last_events)
    return PassOutcome(
        decision=decision,
        report=report,
        status_patch=status_patch(stored_status, built),
        annotations_patch=annotations_patch,
        events=events,
        manual=control,
        observations=observations,
        traffic=traffic,
    )
