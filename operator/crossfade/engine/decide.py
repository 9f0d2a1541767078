"""decide(spec, state, observations, now) -> Decision: the whole failover policy, pure."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from crossfade.engine.health import (
    STALE_AFTER_PERIODS,
    HealthChange,
    in_boot_grace,
    is_failed,
    note_scale_up,
    observe_capacity,
    observe_health,
)
from crossfade.engine.observations import (
    NodeObservation,
    Observations,
    ProbeResult,
    ProviderErrorKind,
    ProviderObservation,
)
from crossfade.engine.plan import (
    Action,
    ConditionStatus,
    ConditionType,
    EmitEvent,
    EventType,
    RecordTransition,
    ScalePlacement,
    SetCondition,
    SetWeights,
    is_effect,
)
from crossfade.engine.policy import PoolPolicy, Role, SpecLike, TrafficMode, policy_from_spec
from crossfade.engine.state import FLAP_WINDOW_S, Health, PlacementState, PoolState
from crossfade.engine.weights import WEIGHT_TOTAL, Weights, apportion, step_toward

# A placement that carried traffic or was planned to is kept at its size this long after
# it stopped being needed, so a flapping neighbour does not make it scale up and down.
SCALE_DOWN_AFTER_S = 300
# Steps are due once per probe period. While leaving a failing placement the passes that
# take them are woken by the failing probe results (handlers/probe_feed.py), which arrive
# on a schedule jittered by +-10% (probes/scheduler.py): with a strict full period, a
# result that came early found the step not yet due and the next one waited for the
# following pass, up to one more whole period. A Failover step is therefore due once this
# share of the period is left behind; failback and rebalancing keep the full period.
FAILOVER_STEP_SLACK = 0.25

# Events about weight moves; with effects withheld they would describe things not done.
SHIFT_EVENT_REASONS = frozenset(
    {
        "Failover",
        "Failback",
        "Rebalance",
        "TrafficStep",
        "FlapGuard",
        "FailoverCompleted",
        "FailbackCompleted",
        "RebalanceCompleted",
    }
)


_THROTTLED = ProviderErrorKind.THROTTLED.value


class Mode:
    """Whether the plan's effects are applied."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"  # failover.automatic: false -> effects are only proposed
    PAUSED = "Paused"  # spec.paused -> effects are only proposed


@dataclass(frozen=True, slots=True)
class Decision:
    """The new state, the actions to apply, and the effects withheld (manual or paused)."""

    state: PoolState
    plan: tuple[Action, ...]
    proposed: tuple[Action, ...] = ()
    target_weights: Mapping[str, int] | None = None
    mode: str = Mode.AUTOMATIC


def _fmt_weights(weights: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={weight}" for name, weight in weights.items())


def _valid_observed(weights: Mapping[str, int] | None, names: tuple[str, ...]) -> Weights | None:
    if not weights:
        return None
    values = weights.values()
    if tuple(weights) == names and sum(values) == WEIGHT_TOTAL and min(values) >= 0:
        return dict(weights)
    picked = {name: int(weights.get(name, 0)) for name in names}
    if any(w < 0 for w in picked.values()) or sum(picked.values()) <= 0:
        return None
    if sum(picked.values()) == WEIGHT_TOTAL:
        return picked
    return apportion({k: float(v) for k, v in picked.items()}, order=names)


def _observe_provider(
    state: PoolState,
    placement_state: PlacementState,
    *,
    name: str,
    observation: ProviderObservation | None,
    policy: PoolPolicy,
    now: float,
    actions: list[Action],
) -> None:
    if observation is None:
        return
    if placement_state.last_provider_at is not None and (
        observation.at <= placement_state.last_provider_at
    ):
        return
    placement_state.last_provider_at = observation.at
    placement_state.last_seen_at = max(observation.at, placement_state.last_seen_at or 0.0)
    if observation.desired is not None:
        placement_state.desired = observation.desired
    if observation.error is None:
        placement_state.provider_error = None
        entry = state.ice.entries.get(name)
        grown = (
            observation.ready is not None
            and observation.desired is not None
            and observation.ready >= observation.desired
        )
        if entry is not None and grown and now >= entry.until:
            state.ice.flush(name)
        return
    placement_state.provider_error = observation.error.value
    placement_state.provider_error_at = observation.at
    if observation.error is ProviderErrorKind.INSUFFICIENT_CAPACITY:
        if state.ice.is_unavailable(name, now=now):
            return
        backoff_s = state.ice.mark_unavailable(
            name, now=now, base_backoff_s=policy.ice_backoff_s, message=observation.message
        )
        actions.append(
            EmitEvent(
                EventType.WARNING,
                "InsufficientCapacity",
                f"{name}: cloud reports insufficient capacity "
                f"({observation.message or 'no detail'}); skipping it for {backoff_s:.0f} s "
                f"(strike {state.ice.strikes(name)})",
            )
        )


def _spill_over(*, usable: list[str], capacity: Mapping[str, int], demand: int) -> dict[str, float]:
    served: dict[str, float] = {}
    remaining = demand
    for name in usable:
        if remaining <= 0:
            break
        give = min(remaining, capacity[name])
        if give > 0:
            served[name] = float(give)
            remaining -= give
    return served


def _water_fill(
    policy: PoolPolicy, *, usable: list[str], capacity: Mapping[str, int], demand: int
) -> dict[str, float]:
    """Weighted mode: shares by placement weight, none above what its capacity can serve."""
    served = dict.fromkeys(usable, 0.0)
    open_names = list(usable)
    remaining = float(demand)
    while open_names and remaining > 1e-9:
        wanted = {n: float(policy.placement(n).weight or 1) for n in open_names}
        total = sum(wanted.values())
        capped = []
        for name in open_names:
            offer = remaining * wanted[name] / total
            room = capacity[name] - served[name]
            if offer >= room:
                capped.append(name)
        if not capped:
            for name in open_names:
                served[name] += remaining * wanted[name] / total
            remaining = 0.0
            break
        for name in capped:
            room = capacity[name] - served[name]
            served[name] += room
            remaining -= room
            open_names.remove(name)
    return {name: share for name, share in served.items() if share > 0}


def _active(weights: Mapping[str, int] | None, rank: Mapping[str, int]) -> str | None:
    if not weights:
        return None
    return min(
        (name for name, w in weights.items() if w > 0),
        key=lambda name: (-weights[name], rank.get(name, len(rank))),
        default=None,
    )


def decide(
    spec: SpecLike | PoolPolicy, state: PoolState | None, observations: Observations, now: float
) -> Decision:
    """Compute the next state and plan for one pool; pure and deterministic.

    ``spec`` is an InferencePoolSpec, a spec mapping, or a prepared PoolPolicy.
    """
    policy = policy_from_spec(spec)
    names = policy.names
    rank = policy.rank
    old = state if state is not None else PoolState()
    s = old.copy()
    actions: list[Action] = []
    if s.started_at is None:
        s.started_at = now
    s.decisions += 1
    if len(s.placements) > len(names) or any(n not in rank for n in s.placements):
        for stale_name in [n for n in s.placements if n not in rank]:
            del s.placements[stale_name]
    if s.weights is not None and tuple(s.weights) != names:
        s.weights = {name: s.weights.get(name, 0) for name in names}
        if sum(s.weights.values()) != WEIGHT_TOTAL:
            s.weights = _valid_observed(s.weights, names)

    manual = policy.paused or not policy.automatic
    traffic = observations.traffic
    observed = _valid_observed(traffic.weights if traffic else None, names)
    if observed is not None and (s.weights is None or manual):
        s.weights = observed
    current = s.weights

    # 1. Observe: capacity, cloud errors (ICE cache), health with hysteresis.
    probes_by, nodes_by, providers_by = _index(observations)
    for placement in policy.placements:
        name = placement.name
        ps = s.placement(name)
        provider = providers_by.get(name)
        observe_capacity(ps, placement=placement, nodes=nodes_by.get(name), provider=provider)
        _observe_provider(
            s, ps, name=name, observation=provider, policy=policy, now=now, actions=actions
        )
        changes = observe_health(
            ps,
            name=name,
            policy=policy,
            probes=probes_by.get(name, ()),
            carries_traffic=bool(current and current.get(name, 0) > 0),
            now=now,
        )
        if changes:
            actions.extend(_health_event(change) for change in changes)

    capacity: dict[str, int | None] = {}
    fresh_names: list[str] = []
    stale_before = now - STALE_AFTER_PERIODS * policy.period_s  # inlined is_stale: hot path
    for name in names:
        ps = s.placements[name]
        if ps.last_seen_at is None or ps.last_seen_at < stale_before:
            capacity[name] = None
        else:
            capacity[name] = ps.ready_accelerators
            fresh_names.append(name)

    # 2. Which placements may carry traffic now.
    usable: list[str] = []
    unknown_with_capacity: list[str] = []
    waiting_failback: list[str] = []
    recovering: list[str] = []  # passed failbackDelaySeconds in this decision
    gate_held = False  # the flap guard kept a recovered placement out of rotation
    for name in names:
        ps = s.placements[name]
        cap = capacity[name]
        if cap is None or cap <= 0 or is_failed(ps, policy=policy, now=now):
            continue
        if ps.failed_at is not None:
            recovered = (
                ps.health is Health.HEALTHY
                and ps.healthy_since is not None
                and now - ps.healthy_since >= policy.failback_delay_s
            )
            if not recovered:
                waiting_failback.append(name)
                continue
            recent = [t for t in s.transitions if now - t < FLAP_WINDOW_S]
            limit = policy.max_failovers_per_hour
            if flap_guard_blocks(kind="Failback", recent=len(recent), limit=limit):
                if not s.flap_guarded:
                    actions.append(
                        EmitEvent(
                            EventType.WARNING,
                            "FlapGuard",
                            f"{name} is healthy again but stays out of rotation: "
                            f"{len(recent)} transitions in the last hour, "
                            f"maxFailoversPerHour {limit}",
                        )
                    )
                s.flap_guarded = gate_held = True
                waiting_failback.append(name)
                continue
            ps.failed_at = None
            recovering.append(name)
        holds = bool(current and current.get(name, 0) > 0)
        if ps.health is Health.HEALTHY or (holds and ps.health is Health.UNHEALTHY):
            usable.append(name)
        elif ps.health is Health.UNKNOWN:
            (usable if holds else unknown_with_capacity).append(name)
    if not usable:
        usable = unknown_with_capacity

    # 3. Fail-static: observations missing, or everything unhealthy at once.
    fail_static_reason: str | None = None
    fail_static_message = ""
    awaiting_capacity = False  # first decisions of a pool: no node reading yet, hold quietly
    warm = [
        n for n in fresh_names if (s.placements[n].total_nodes or 0) > 0 or (capacity[n] or 0) > 0
    ]
    if not fresh_names:
        fail_static_reason = "ObservationsMissing"
        fail_static_message = (
            f"no observation of any placement for more than "
            f"{3 * policy.period_s} s; the observer may be broken"
        )
        if observations.errors:
            fail_static_message += f" ({'; '.join(observations.errors)})"
    elif len(warm) > 1 and all(s.placements[n].health is Health.UNHEALTHY for n in warm):
        fail_static_reason = "AllPlacementsUnhealthy"
        fail_static_message = "every placement with nodes looks unhealthy at once: " + "; ".join(
            f"{n}: {s.placements[n].message}" for n in warm
        )
    elif not usable and all(s.placements[n].capacity_at is None for n in names):
        # A new pool (or a restarted observer) whose probes answered before any node reading
        # arrived: nothing was measured, so nothing looks broken; keep weights, raise nothing.
        awaiting_capacity = True
    elif not usable:
        fail_static_reason = "NoReadyCapacity"
        fail_static_message = "no placement has ready, healthy capacity: " + "; ".join(
            f"{n}: {capacity[n] if capacity[n] is not None else 'unknown'} ready accelerators, "
            f"{s.placements[n].health.value}"
            for n in names
        )

    if fail_static_reason is None:
        # Under fail-static nothing moved, so a recovery there is not a failback.
        for name in names:
            ps = s.placements[name]
            if (
                ps.failed_at is None
                and ps.health is Health.UNHEALTHY
                and is_failed(ps, policy=policy, now=now)
            ):
                ps.failed_at = now

    # 4. Target weights.
    target: Weights | None = None
    intended: str | None = None
    if fail_static_reason is None and not awaiting_capacity:
        target, intended = _target_weights(
            policy, s=s, usable=usable, capacity=capacity, current=current, rank=rank
        )

    new_weights: Weights | None = current
    weight_reason = ""
    weight_message = ""
    if fail_static_reason is not None:
        if not s.fail_static or s.fail_static_reason != fail_static_reason:
            actions.append(EmitEvent(EventType.WARNING, "FailStatic", fail_static_message))
        s.fail_static = True
        s.fail_static_reason = fail_static_reason
        if new_weights is None and s.last_good_weights is not None:
            new_weights = dict(s.last_good_weights)
            weight_reason = "FailStaticLastKnownGood"
            weight_message = f"no safe target; holding {_fmt_weights(new_weights)}"
        # With no weights known and no evidence, write nothing: whatever the traffic layer
        # holds (perhaps a failover made before a restart) is safer than a guess.
    elif awaiting_capacity:
        pass  # hold whatever the traffic layer has until the first node reading
    else:
        if s.fail_static:
            actions.append(
                EmitEvent(EventType.NORMAL, "FailStaticCleared", "observations are usable again")
            )
        s.fail_static = False
        s.fail_static_reason = None
        assert target is not None
        if current is None:
            new_weights = target
            weight_reason = "InitialWeights"
            weight_message = f"first decision: {_fmt_weights(target)}"
        else:
            new_weights, weight_reason, weight_message = _move(
                policy,
                s=s,
                current=current,
                target=target,
                intended=intended,
                capacity=capacity,
                rank=rank,
                now=now,
                actions=actions,
            )
    if gate_held:
        s.flap_guarded = True
    if recovering and target is not None and current is not None:
        failback_started = _record_failbacks(
            policy,
            s=s,
            recovering=recovering,
            current=current,
            target=target,
            capacity=capacity,
            now=now,
            actions=actions,
        )
        if failback_started and weight_reason == "Rebalance":
            # _move ran before the Failback was recorded; its first step is that Failback.
            weight_reason = "Failback"
    if new_weights is not None and new_weights != s.weights:
        actions.append(SetWeights(dict(new_weights), weight_reason, weight_message))
        actions.append(
            EmitEvent(EventType.NORMAL, "TrafficStep", f"{weight_reason}: {weight_message}")
        )
    s.weights = dict(new_weights) if new_weights is not None else None
    if s.weights is not None and not s.fail_static:
        s.last_good_weights = dict(s.weights)
    if (
        s.shift_to is not None
        and target is not None
        and s.weights == target
        and all(target[n] == 0 or n in usable for n in names)
    ):
        duration = int(now - (s.shift_started_at or now))
        done = f"{s.shift_reason or 'Shift'}Completed"
        message = (
            f"traffic moved from {s.shift_from} to {s.shift_to} in {duration} s: "
            f"{_fmt_weights(s.weights)}"
        )
        actions.append(
            RecordTransition(
                now, s.shift_from, s.shift_to, done, message, duration_seconds=duration
            )
        )
        actions.append(EmitEvent(EventType.NORMAL, done, message))
        s.shift_from = s.shift_to = s.shift_reason = None
        s.shift_started_at = None

    # 5. Capacity: warm before shift, ICE spill-over, warm standby floor, scale-down last.
    if fail_static_reason != "ObservationsMissing":
        actions.extend(
            _scale(
                policy,
                s=s,
                target=target,
                capacity=capacity,
                now=now,
                allow_down=fail_static_reason is None,
            )
        )

    actions.extend(
        _conditions(
            policy,
            s=s,
            target=target,
            capacity=capacity,
            traffic_weights=observed,
            traffic_readable=traffic is not None and traffic.weights is not None,
            traffic_drift=bool(traffic and traffic.drift),
            rank=rank,
            waiting=waiting_failback,
        )
    )

    mode = (
        Mode.PAUSED if policy.paused else (Mode.MANUAL if not policy.automatic else Mode.AUTOMATIC)
    )
    if mode == Mode.AUTOMATIC:
        s.last_proposal = None
        return Decision(state=s, plan=tuple(actions), target_weights=target, mode=mode)
    withheld = [a for a in actions if _withheld(a)]
    kept = [a for a in actions if not _withheld(a)]
    _restore_effect_fields(s, old=old, observed=observed)
    summary = "; ".join(_describe(a) for a in withheld if is_effect(a)) or None
    if summary is not None and summary != old.last_proposal:
        what = "paused" if mode == Mode.PAUSED else "automatic failover is off"
        kept.append(
            EmitEvent(EventType.NORMAL, "RecommendationOnly", f"{what}; would do: {summary}")
        )
    s.last_proposal = summary
    return Decision(
        state=s, plan=tuple(kept), proposed=tuple(withheld), target_weights=target, mode=mode
    )


def _record_failbacks(
    policy: PoolPolicy,
    *,
    s: PoolState,
    recovering: list[str],
    current: Mapping[str, int],
    target: Mapping[str, int],
    capacity: Mapping[str, int | None],
    now: float,
    actions: list[Action],
) -> bool:
    """Record a Failback when a placement that passed failbackDelaySeconds gains weight.

    Returns whether one was recorded in this pass.

    Recorded here rather than when the busiest placement changes: with warm-before-shift
    a failing placement can keep most traffic while the fallback is small, and weight
    flowing back to it is still a failback that the flap guard must count.
    """
    recorded = {a.to_placement for a in actions if isinstance(a, RecordTransition)}
    started = False
    for name in recovering:
        if name in recorded or target.get(name, 0) <= current.get(name, 0):
            continue
        losing = [n for n in policy.names if n != name and target.get(n, 0) < current.get(n, 0)]
        source = max(losing, key=lambda n: current.get(n, 0) - target.get(n, 0), default=None)
        message = _shift_message(
            policy, s=s, source=source, goal=name, kind="Failback", capacity=capacity, now=now
        )
        s.transitions = [*(t for t in s.transitions if now - t < FLAP_WINDOW_S), now]
        s.shift_from, s.shift_to, s.shift_reason = source, name, "Failback"
        s.shift_started_at = now
        actions.append(RecordTransition(now, source, name, "Failback", message))
        actions.append(EmitEvent(EventType.NORMAL, "Failback", message))
        started = True
    return started


def _withheld(action: Action) -> bool:
    if is_effect(action) or isinstance(action, RecordTransition):
        return True
    return isinstance(action, EmitEvent) and action.reason in SHIFT_EVENT_REASONS


def _index(
    observations: Observations,
) -> tuple[
    dict[str, list[ProbeResult]], dict[str, NodeObservation], dict[str, ProviderObservation]
]:
    """Group observations by placement in one pass: probes oldest first, the newest others."""
    probes: dict[str, list[ProbeResult]] = {}
    for probe in observations.probes:
        probes.setdefault(probe.placement, []).append(probe)
    for found in probes.values():
        if len(found) > 1:
            found.sort(key=lambda p: p.at)
    nodes: dict[str, NodeObservation] = {}
    for node in observations.nodes:
        seen = nodes.get(node.placement)
        if seen is None or node.at >= seen.at:
            nodes[node.placement] = node
    providers: dict[str, ProviderObservation] = {}
    for provider in observations.providers:
        known = providers.get(provider.placement)
        if known is None or provider.at >= known.at:
            providers[provider.placement] = provider
    return probes, nodes, providers


def _describe(action: Action) -> str:
    if isinstance(action, ScalePlacement):
        return f"scale {action.placement} to {action.desired} ({action.reason})"
    if isinstance(action, SetWeights):
        return f"set weights {_fmt_weights(action.weights)} ({action.reason})"
    return type(action).__name__


def _restore_effect_fields(s: PoolState, *, old: PoolState, observed: Weights | None) -> None:
    """Manual or paused: remember observations, but not effects that were never applied."""
    s.weights = observed if observed is not None else (dict(old.weights) if old.weights else None)
    s.transitions = list(old.transitions)
    s.shift_from, s.shift_to = old.shift_from, old.shift_to
    s.shift_reason, s.shift_started_at = old.shift_reason, old.shift_started_at
    s.last_step_at = old.last_step_at
    s.flap_guarded = old.flap_guarded
    for name, ps in s.placements.items():
        before = old.placements.get(name)
        if ps.last_provider_at == (before.last_provider_at if before else None):
            ps.desired = before.desired if before else None
            ps.requested_at = before.requested_at if before else None
            ps.scale_up_at = before.scale_up_at if before else None
            ps.ready_before_scale_up = before.ready_before_scale_up if before else None


def _health_event(change: HealthChange) -> EmitEvent:
    kind = EventType.WARNING if change.after is Health.UNHEALTHY else EventType.NORMAL
    return EmitEvent(
        kind,
        change.reason,
        f"{change.placement}: {change.before.value} -> {change.after.value}: {change.message}",
    )


def _target_weights(
    policy: PoolPolicy,
    *,
    s: PoolState,
    usable: list[str],
    capacity: Mapping[str, int | None],
    current: Mapping[str, int] | None,
    rank: Mapping[str, int],
) -> tuple[Weights, str | None]:
    """Return the weights to move toward and the placement meant to carry most traffic."""
    caps = {name: capacity[name] or 0 for name in usable}
    demand = policy.demand_accelerators
    if policy.mode is TrafficMode.CAPACITY_PROPORTIONAL:
        shares = {name: float(caps[name]) for name in usable if caps[name] > 0}
        served = min(float(demand), sum(shares.values()))
        scale = served / sum(shares.values()) if shares else 0.0
        shares = {name: share * scale for name, share in shares.items()}
    elif policy.mode is TrafficMode.WEIGHTED:
        shares = _water_fill(policy, usable=usable, capacity=caps, demand=demand)
    else:
        shares = _spill_over(usable=usable, capacity=caps, demand=demand)
    intended = min(shares, key=lambda n: (-shares[n], rank[n]), default=None)
    unserved = demand - sum(shares.values())
    if current and unserved > 1e-9:
        # Warm before shift: what the targets cannot serve yet stays where it is, as long
        # as that placement still has nodes to serve it with.
        holders: dict[str, float] = {
            name: float(weight)
            for name, weight in current.items()
            if weight > 0 and name not in shares and (capacity.get(name) or 0) > 0
        }
        held = sum(holders.values())
        for name, weight in holders.items():
            # A holder keeps at most what it has now: holding over never grows a placement.
            shares[name] = min(unserved * weight / held, weight / WEIGHT_TOTAL * demand)
    else:
        holders = {}
    weights = apportion(shares, order=sorted(shares, key=lambda n: rank[n]))
    full = {name: weights.get(name, 0) for name in policy.names}
    if current and intended is not None:
        # Rounding must not grow a holder either; the excess goes to the intended placement.
        for name in holders:
            excess = full[name] - current.get(name, 0)
            if excess > 0:
                full[name] -= excess
                full[intended] += excess
    return full, intended


def _move(
    policy: PoolPolicy,
    *,
    s: PoolState,
    current: Weights,
    target: Weights,
    intended: str | None,
    capacity: Mapping[str, int | None],
    rank: Mapping[str, int],
    now: float,
    actions: list[Action],
) -> tuple[Weights, str, str]:
    names = policy.names
    target = {name: target.get(name, 0) for name in names}
    forced = [n for n in names if current.get(n, 0) > 0 and capacity[n] == 0]
    current_active = _active(current, rank)
    target_active = intended
    goal = target
    if (
        s.shift_to is not None
        and s.shift_from == current_active
        and target_active not in (s.shift_to, current_active)
    ):
        # Same shift, better destination (e.g. a third placement finished booting).
        s.shift_to = target_active
    if target_active != current_active and s.shift_to != target_active:
        kind = _shift_kind(
            policy,
            s=s,
            source=current_active,
            goal=target_active,
            forced=forced,
            now=now,
            rank=rank,
        )
        # Only leaving a failing placement starts a transition here. Returning to a
        # recovered one is recorded (and flap-guarded) when it passes failbackDelaySeconds;
        # any other change of the busiest placement is weight following capacity.
        if kind == "Failover":
            message = _shift_message(
                policy,
                s=s,
                source=current_active,
                goal=target_active,
                kind=kind,
                capacity=capacity,
                now=now,
            )
            s.transitions = [*(t for t in s.transitions if now - t < FLAP_WINDOW_S), now]
            s.shift_from, s.shift_to, s.shift_reason = current_active, target_active, kind
            s.shift_started_at = now
            actions.append(RecordTransition(now, current_active, target_active, kind, message))
            actions.append(EmitEvent(EventType.WARNING, kind, message))
    s.flap_guarded = False
    reason = s.shift_reason or "Rebalance"
    moved = dict(current)
    if forced:
        moved, reason, _ = _evacuate(current, forced=forced, goal=goal, names=names, rank=rank)
    step_gap_s = float(policy.period_s)
    if s.shift_reason == "Failover":
        step_gap_s *= 1 - FAILOVER_STEP_SLACK
    stepped = s.last_step_at is not None and now - s.last_step_at < step_gap_s
    if moved != goal and not stepped:
        moved = step_toward(moved, goal, step_percent=policy.step_percent)
        s.last_step_at = now
    elif forced:
        s.last_step_at = now
    if moved == current:
        return moved, reason, ""  # nothing to write, nothing to explain
    message = (
        f"{_fmt_weights(moved)} toward {_fmt_weights(goal)} (stepPercent {policy.step_percent})"
    )
    if forced:
        message = f"{', '.join(forced)} has no ready capacity; {message}"
    return moved, reason, message


def _evacuate(
    current: Mapping[str, int],
    *,
    forced: list[str],
    goal: Mapping[str, int],
    names: tuple[str, ...],
    rank: Mapping[str, int],
) -> tuple[Weights, str, str]:
    """Take all weight off placements with no ready capacity, at once, never stepped.

    The freed weight fills the goal's deficits first (highest priority first); whatever is
    left goes to the placement already holding most of the rest.
    """
    moved = {name: current.get(name, 0) for name in names}
    freed = sum(moved[n] for n in forced)
    for name in forced:
        moved[name] = 0
    for name in sorted(goal, key=lambda n: rank[n]):
        if freed <= 0:
            break
        give = min(freed, max(0, goal[name] - moved[name]))
        moved[name] += give
        freed -= give
    if freed > 0:
        holders = [n for n in names if moved[n] > 0] or [
            n for n in sorted(goal, key=lambda n: rank[n]) if goal[n] > 0
        ]
        receiver = min(holders, key=lambda n: (-moved[n], rank[n]))
        moved[receiver] += freed
    message = f"{', '.join(forced)} has no ready capacity; moved its traffic at once"
    return moved, "NoReadyCapacity", message


def flap_guard_blocks(*, kind: str, recent: int, limit: int) -> bool:
    """Whether maxFailoversPerHour stops a transition of ``kind`` from starting now.

    Leaving an unhealthy placement (Failover) is never blocked: holding traffic on a dead
    placement would turn a flap guard into an outage. Any other transition (in practice a
    Failback) starts only while at most ``limit - 2`` transitions happened in the last
    hour (or none), which
    leaves room for the failover that may follow, so a flapping preferred placement
    causes at most ``limit`` transitions per hour.
    """
    if kind == "Failover":
        return False
    return recent > 0 and recent + 2 > limit


def _shift_kind(
    policy: PoolPolicy,
    *,
    s: PoolState,
    source: str | None,
    goal: str | None,
    forced: list[str],
    now: float,
    rank: Mapping[str, int],
) -> str:
    if source is None or goal is None:
        return "Rebalance"
    ps = s.placements[source]
    if source in forced or is_failed(ps, policy=policy, now=now) or ps.health is Health.UNHEALTHY:
        return "Failover"
    if rank[goal] < rank[source]:
        return "Failback"
    return "Rebalance"


def _elapsed_s(now: float, *, since: float) -> int:
    """Whole seconds from ``since`` to ``now``; evidence stamped after ``now`` counts as 0."""
    # Probe and node readings carry their own timestamps, which may be a moment later than
    # the decision's ``now``: a negative age would print as "-0 s".
    return max(0, round(now - since))


def _shift_message(
    policy: PoolPolicy,
    *,
    s: PoolState,
    source: str | None,
    goal: str | None,
    kind: str,
    capacity: Mapping[str, int | None],
    now: float,
) -> str:
    parts = [f"{kind} from {source} to {goal}"]
    if source is not None:
        ps = s.placements[source]
        evidence = f"{source} is {ps.health.value} ({ps.reason}: {ps.message})"
        if ps.unhealthy_since is not None:
            evidence += (
                f", unhealthy for {_elapsed_s(now, since=ps.unhealthy_since)} s, "
                f"tolerationSeconds {policy.toleration_s}"
            )
        parts.append(evidence)
    if goal is not None:
        gs = s.placements[goal]
        healthy_for = (
            f", healthy for {_elapsed_s(now, since=gs.healthy_since)} s"
            if gs.healthy_since is not None
            else ""
        )
        parts.append(
            f"{goal} is {gs.health.value} with {capacity.get(goal)} ready accelerators{healthy_for}"
        )
        if kind == "Failback":
            parts.append(f"failbackDelaySeconds {policy.failback_delay_s}")
    return "; ".join(parts)


def _scale(
    policy: PoolPolicy,
    *,
    s: PoolState,
    target: Weights | None,
    capacity: Mapping[str, int | None],
    now: float,
    allow_down: bool,
) -> list[Action]:
    actions: list[Action] = []
    remaining = policy.demand_accelerators
    for placement in policy.placements:
        name = placement.name
        ps = s.placements[name]
        current_desired = ps.desired
        if ps.health is Health.UNHEALTHY:
            continue  # neither grow nor shrink a failing placement: it may come back
        iced = bool(s.ice.entries) and s.ice.is_unavailable(name, now=now)
        if iced:
            reach = capacity[name] or 0
        else:
            broken = _broken_nodes(ps, now=now)
            reach = placement.max_accelerators - broken * placement.accelerators_per_node
        alloc = min(max(remaining, 0), reach)
        remaining -= alloc
        carries = bool(s.weights and s.weights.get(name, 0) > 0) or bool(
            target and target.get(name, 0) > 0
        )
        needed = carries or (alloc > 0 and name != policy.preferred.name)
        if needed or (ps.needed and ps.last_needed_at is None):
            # The second case is a restart: the placement was needed when the state was
            # persisted, and the moment it stopped is unknown; count the delay from now.
            ps.last_needed_at = now
        ps.needed = needed
        desired = placement.nodes_for(alloc)
        if placement.role is Role.STANDBY:
            floor = min(policy.warm_standby_nodes, placement.max_nodes)
            desired = max(desired, floor)
        if current_desired is not None and desired == current_desired:
            continue
        if iced and (current_desired is None or desired > current_desired):
            continue
        if current_desired is not None and desired < current_desired:
            quiet_s = now - ps.last_needed_at if ps.last_needed_at is not None else math.inf
            if not allow_down or quiet_s < SCALE_DOWN_AFTER_S:
                continue  # scale down only after traffic has left it, and stayed away
            reason = "TrafficLeft"
            message = f"{name} carries no traffic; scaling {current_desired} -> {desired} nodes" + (
                " (warm standby floor)" if placement.role is Role.STANDBY else ""
            )
        else:
            reason = (
                "WarmBeforeShift"
                if alloc > 0 and name != policy.preferred.name
                else ("WarmStandby" if alloc == 0 else "ServeDemand")
            )
            before = current_desired if current_desired is not None else "unknown"
            message = (
                f"{name}: {alloc} of {policy.demand_accelerators} accelerators planned here; "
                f"{before} -> {desired} nodes"
            )
        throttled = (
            ps.provider_error == _THROTTLED
            and ps.provider_error_at is not None
            and now - ps.provider_error_at < policy.period_s
        )
        if throttled:
            continue  # the cloud asked us to slow down; the next decision retries
        actions.append(ScalePlacement(name, desired, reason, message))
        if current_desired is None or desired > current_desired:
            note_scale_up(ps, now=now)
        ps.desired = desired
        ps.requested_at = now
    return actions


def _broken_nodes(ps: PlacementState, *, now: float) -> int:
    """Nodes that exist but are not ready while no scale-up is under way: lost capacity."""
    total, ready = ps.total_nodes or 0, ps.ready_nodes or 0
    booting = (ps.desired is not None and ps.desired > total) or in_boot_grace(ps, now=now)
    return 0 if booting else max(0, total - ready)


def _conditions(
    policy: PoolPolicy,
    *,
    s: PoolState,
    target: Weights | None,
    capacity: Mapping[str, int | None],
    traffic_weights: Weights | None,
    traffic_readable: bool,
    traffic_drift: bool,
    rank: Mapping[str, int],
    waiting: list[str],
) -> tuple[SetCondition, ...]:
    weights = s.weights or {}
    placements = s.placements
    if not traffic_readable:
        traffic = "TrafficUnreadable"
    elif traffic_drift:
        traffic = "Drift"
    else:
        traffic = "Synced" if traffic_weights == s.weights else "Pending"
    key = _ConditionInputs(
        weights=tuple(weights.items()),
        serving=tuple(
            n
            for n, w in weights.items()
            if w > 0 and (capacity.get(n) or 0) > 0 and placements[n].health is not Health.UNHEALTHY
        ),
        troubled=tuple(
            (n, placements[n].reason)
            for n in policy.names
            if placements[n].health is Health.UNHEALTHY
        ),
        iced=tuple(sorted(s.ice.entries)),
        flap_guarded=s.flap_guarded,
        shift=(s.shift_from, s.shift_to, s.shift_reason),
        waiting=tuple(waiting),
        failback_delay_s=policy.failback_delay_s,
        active=_active(weights, rank),
        preferred=policy.preferred.name,
        fail_static=s.fail_static_reason if s.fail_static else None,
        traffic=traffic,
    )
    return _condition_actions(key)


@dataclass(frozen=True, slots=True)
class _ConditionInputs:
    """Everything the conditions depend on; hashable so identical decisions share them."""

    weights: tuple[tuple[str, int], ...]
    serving: tuple[str, ...]
    troubled: tuple[tuple[str, str], ...]
    iced: tuple[str, ...]
    flap_guarded: bool
    shift: tuple[str | None, str | None, str | None]
    waiting: tuple[str, ...]
    failback_delay_s: int
    active: str | None
    preferred: str
    fail_static: str | None
    traffic: str


# Memoised (pure: the result depends on the key only); most decisions repeat the last one.
@functools.lru_cache(maxsize=4096)
def _condition_actions(key: _ConditionInputs) -> tuple[SetCondition, ...]:
    true, false, unknown = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN
    text = _fmt_weights(dict(key.weights))
    out: list[SetCondition] = []
    if key.serving:
        message = f"serving from {', '.join(key.serving)}: {text}"
        out.append(SetCondition(ConditionType.READY, true, "Serving", message))
    else:
        out.append(
            SetCondition(
                ConditionType.READY,
                false,
                key.fail_static or "NotServing",
                "no healthy placement with ready capacity holds traffic",
            )
        )
    if key.troubled or key.iced or key.flap_guarded:
        bits = [f"{n} {reason}" for n, reason in key.troubled]
        bits += [f"{n} InsufficientCapacity" for n in key.iced]
        if key.flap_guarded:
            bits.append("flap guard holding traffic")
        reason = (
            "FlapGuard"
            if key.flap_guarded
            else ("PlacementUnhealthy" if key.troubled else "InsufficientCapacity")
        )
        out.append(SetCondition(ConditionType.DEGRADED, true, reason, "; ".join(bits)))
    else:
        out.append(
            SetCondition(ConditionType.DEGRADED, false, "AllHealthy", "every placement healthy")
        )
    shift_from, shift_to, shift_reason = key.shift
    if shift_to is not None:
        message = f"moving traffic from {shift_from} to {shift_to}"
        out.append(
            SetCondition(ConditionType.FAILING_OVER, true, shift_reason or "Shifting", message)
        )
    else:
        message = "no shift in progress"
        if key.waiting:
            message += (
                f"; waiting out failbackDelaySeconds {key.failback_delay_s} "
                f"for {', '.join(key.waiting)}"
            )
        out.append(SetCondition(ConditionType.FAILING_OVER, false, "Steady", message))
    if key.active is not None and key.active != key.preferred:
        message = f"most traffic on {key.active}, preferred is {key.preferred}"
        out.append(SetCondition(ConditionType.FAILED_OVER, true, "ServingFromFallback", message))
    else:
        message = f"most traffic on {key.preferred}"
        out.append(SetCondition(ConditionType.FAILED_OVER, false, "ServingFromPreferred", message))
    if key.fail_static is not None:
        message = f"holding last-known-good weights {text}"
        out.append(SetCondition(ConditionType.FAIL_STATIC, true, key.fail_static, message))
    else:
        message = "acting on fresh observations"
        out.append(SetCondition(ConditionType.FAIL_STATIC, false, "ObservationsUsable", message))
    synced = {
        "TrafficUnreadable": (unknown, "no traffic layer reading in this decision"),
        "Drift": (false, "another manager changed the weights"),
        "Synced": (true, f"traffic layer holds {text}"),
        "Pending": (false, "traffic layer does not hold the planned weights yet"),
    }
    status, message = synced[key.traffic]
    out.append(SetCondition(ConditionType.TRAFFIC_SYNCED, status, key.traffic, message))
    return tuple(out)
