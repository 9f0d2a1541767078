"""Per-placement health state machine: hysteresis, initial delay, node readiness, staleness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crossfade.engine.observations import (
    NodeObservation,
    ProbeOutcome,
    ProbeResult,
    ProviderObservation,
)
from crossfade.engine.policy import PlacementPolicy, PoolPolicy
from crossfade.engine.state import Health, PlacementState

# Observations older than this many probe periods count as missing.
STALE_AFTER_PERIODS = 3
# Nodes the engine asked for may register NotReady and stay so while they boot (VM start,
# kubelet join, GPU driver install); within this grace they do not count against
# minReadyPercent. Ten minutes covers a cold GPU node on the clouds we support.
NODE_BOOT_GRACE_S = 600


@dataclass(frozen=True, slots=True)
class HealthChange:
    """One health transition of one placement, with its evidence."""

    placement: str
    at: float
    before: Health
    after: Health
    reason: str
    message: str


def is_stale(state: PlacementState, *, policy: PoolPolicy, now: float) -> bool:
    """True when nothing about the placement was seen within the staleness window."""
    if state.last_seen_at is None:
        return True
    return now - state.last_seen_at > STALE_AFTER_PERIODS * policy.period_s


def is_failed(state: PlacementState, *, policy: PoolPolicy, now: float) -> bool:
    """Unhealthy for at least tolerationSeconds: traffic should leave it."""
    return (
        state.health is Health.UNHEALTHY
        and state.unhealthy_since is not None
        and now - state.unhealthy_since >= policy.toleration_s
    )


def observe_capacity(
    state: PlacementState,
    *,
    placement: PlacementPolicy,
    nodes: NodeObservation | None,
    provider: ProviderObservation | None,
) -> None:
    """Take ready capacity from the newest node reading, else from the cloud's ready count."""
    at: float | None = None
    ready_acc: int | None = None
    if nodes is not None and (state.capacity_at is None or nodes.at > state.capacity_at):
        at = nodes.at
        ready_acc = nodes.allocatable_accelerators
        state.ready_nodes = nodes.ready_nodes
        state.total_nodes = nodes.total_nodes
    elif (
        provider is not None
        and provider.ready is not None
        and provider.error is None
        and (state.capacity_at is None or provider.at > state.capacity_at)
        and nodes is None
    ):
        at = provider.at
        ready_acc = provider.ready * placement.accelerators_per_node
        state.ready_nodes = provider.ready
        state.total_nodes = provider.desired if provider.desired is not None else provider.ready
    if at is None or ready_acc is None:
        return
    previous = state.ready_accelerators
    if ready_acc > 0 and not previous:
        state.ready_since = at
    elif ready_acc == 0:
        state.ready_since = None
    state.ready_accelerators = ready_acc
    state.capacity_at = at
    state.last_seen_at = max(at, state.last_seen_at or at)


def in_boot_grace(state: PlacementState, *, now: float) -> bool:
    """True while nodes the engine asked for may still be booting."""
    return state.scale_up_at is not None and now - state.scale_up_at < NODE_BOOT_GRACE_S


def note_scale_up(state: PlacementState, *, now: float) -> None:
    """Remember that the engine asked for more nodes; an open grace keeps its baseline."""
    if not in_boot_grace(state, now=now):
        state.ready_before_scale_up = state.ready_nodes or 0
    state.scale_up_at = now


def _node_problem(
    state: PlacementState, *, policy: PoolPolicy, carries_traffic: bool, now: float
) -> str | None:
    total = state.total_nodes or 0
    ready = state.ready_nodes or 0
    if total <= 0:
        return None
    expected = total
    booting = ""
    if in_boot_grace(state, now=now):
        # Judge readiness against the size that was ready before our own scale-up; the
        # requested nodes count only once NODE_BOOT_GRACE_S has passed.
        expected = min(total, state.ready_before_scale_up or 0)
        booting = f" (of {expected} ready before the scale-up; {total - ready} booting)"
    if ready * 100 < policy.min_ready_percent * expected:
        return (
            f"{ready}/{total} nodes ready{booting}, "
            f"below minReadyPercent {policy.min_ready_percent}"
        )
    accelerators = state.ready_accelerators or 0
    if carries_traffic and accelerators < policy.min_allocatable_accelerators:
        return (
            f"{accelerators} allocatable accelerators, below minAllocatableAccelerators "
            f"{policy.min_allocatable_accelerators}"
        )
    return None


def _set(
    state: PlacementState,
    *,
    name: str,
    at: float,
    health: Health,
    reason: str,
    message: str,
    changes: list[HealthChange],
) -> None:
    before = state.health
    state.reason = reason
    state.message = message
    if before is health:
        return
    state.health = health
    state.last_transition_at = at
    if health is Health.UNHEALTHY:
        state.unhealthy_since = at
        state.healthy_since = None
    elif health is Health.HEALTHY:
        state.healthy_since = at
        state.unhealthy_since = None
    else:
        state.healthy_since = None
        state.unhealthy_since = None
    changes.append(HealthChange(name, at, before, health, reason, message))


def observe_health(
    state: PlacementState,
    *,
    name: str,
    policy: PoolPolicy,
    probes: Sequence[ProbeResult],
    carries_traffic: bool,
    now: float,
) -> list[HealthChange]:
    """Feed new probe results and the latest node reading through the hysteresis rules."""
    changes: list[HealthChange] = []
    if state.desired is not None and (state.ready_nodes or 0) >= state.desired:
        state.scale_up_at = None  # everything asked for is Ready: the boot grace is over
    cold = state.total_nodes == 0 or (state.total_nodes is None and state.ready_accelerators == 0)
    # Nodes we asked for have joined but none is Ready yet: as cold as no nodes for probes.
    booting = not state.ready_accelerators and in_boot_grace(state, now=now)
    problem = _node_problem(state, policy=policy, carries_traffic=carries_traffic, now=now)
    for probe in probes:
        if state.last_probe_at is not None and probe.at <= state.last_probe_at:
            continue
        state.last_probe_at = probe.at
        state.last_seen_at = max(probe.at, state.last_seen_at or probe.at)
        if probe.latency_ms is not None:
            state.latency_ms = probe.latency_ms
        if probe.outcome is ProbeOutcome.FAILING:
            warming = state.ready_since is not None and (
                probe.at < state.ready_since + policy.initial_delay_s
            )
            if cold or booting or warming:
                # A placement with no nodes, only booting nodes, or nodes still inside
                # initialDelaySeconds cannot answer yet; that is not evidence of failure.
                state.consecutive_failures = 0
                state.consecutive_successes = 0
                continue
            state.consecutive_failures += 1
            state.consecutive_successes = 0
            if (
                state.consecutive_failures >= policy.failure_threshold
                and state.health is not Health.UNHEALTHY
            ):
                detail = f" (last: {probe.detail})" if probe.detail else ""
                _set(
                    state,
                    name=name,
                    at=probe.at,
                    health=Health.UNHEALTHY,
                    reason="ProbeFailures",
                    message=(
                        f"{state.consecutive_failures} consecutive failed probes, "
                        f"failureThreshold {policy.failure_threshold}{detail}"
                    ),
                    changes=changes,
                )
        else:
            state.consecutive_successes += 1
            state.consecutive_failures = 0
            if (
                state.consecutive_successes >= policy.success_threshold
                and state.health is not Health.HEALTHY
                and problem is None
            ):
                reason = "Overloaded" if probe.outcome is ProbeOutcome.OVERLOADED else "Healthy"
                _set(
                    state,
                    name=name,
                    at=probe.at,
                    health=Health.HEALTHY,
                    reason=reason,
                    message=(
                        f"{state.consecutive_successes} consecutive good probes, "
                        f"successThreshold {policy.success_threshold}"
                    ),
                    changes=changes,
                )
    at = state.capacity_at if state.capacity_at is not None else now
    if cold:
        _set(
            state,
            name=name,
            at=at,
            health=Health.UNKNOWN,
            reason="NoNodes",
            message="no nodes: cold standby or scaled to zero",
            changes=changes,
        )
        return changes
    # Only a placement that was serving can lose its nodes; a booting one is not failing.
    if problem is not None and state.health is Health.HEALTHY:
        _set(
            state,
            name=name,
            at=at,
            health=Health.UNHEALTHY,
            reason="NodesNotReady",
            message=problem,
            changes=changes,
        )
    return changes
