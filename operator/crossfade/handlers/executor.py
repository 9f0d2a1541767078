"""Carry out a decision's actions: scale providers, write router weights, collect the rest.

Effects are idempotent (a scale token derived from the intent, routers that skip writes
of the weights they already hold), so a pass repeated after a crash changes nothing twice.
Reporting actions (events, conditions, transitions) are returned for the status writer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crossfade.engine.plan import (
    Action,
    EmitEvent,
    EventType,
    RecordTransition,
    ScalePlacement,
    SetCondition,
    SetWeights,
)
from crossfade.logging import log_context
from crossfade.providers.base import CapacityProvider, ScaleResult, idempotency_token
from crossfade.providers.errors import ProviderError
from crossfade.routers.base import ApplyResult, RouterError, TrafficRouter

log = logging.getLogger(__name__)


class ExecutorMetrics(Protocol):
    """The few metric hooks the executor calls (handlers.metrics implements them)."""

    def provider_call(self, *, placement: str, operation: str, error: str | None) -> None: ...

    def weights_applied(self, *, weights: Mapping[str, int]) -> None: ...


class NullMetrics:
    """Metrics hooks that record nothing (unit tests, `crossfade drill`)."""

    def provider_call(self, *, placement: str, operation: str, error: str | None) -> None:
        return None

    def weights_applied(self, *, weights: Mapping[str, int]) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ActionFailure:
    """One effect that did not land, with a CamelCase reason for events and conditions."""

    action: Action
    reason: str
    message: str
    retryable: bool


@dataclass(slots=True)
class ExecutionReport:
    """What one pass did and what it has to report."""

    scaled: list[tuple[ScalePlacement, ScaleResult]] = field(default_factory=list)
    applied: list[tuple[str, ApplyResult]] = field(default_factory=list)
    failures: list[ActionFailure] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    conditions: list[SetCondition] = field(default_factory=list)
    transitions: list[RecordTransition] = field(default_factory=list)
    withheld: list[Action] = field(default_factory=list)

    @property
    def weights_written(self) -> Mapping[str, int] | None:
        """The weights the last successful router write left in place, if any write ran."""
        return self.applied[-1][1].weights if self.applied else None


def scale_token(*, pool_uid: str, action: ScalePlacement, epoch: int) -> str:
    """Return the idempotency token of one scale intent.

    ``epoch`` is the engine's transition count, so the same failover retried after a crash
    reuses the token while a later, separate scale to the same size gets a new one.
    """
    return idempotency_token(pool_uid, action.placement, action.desired, epoch)


async def execute(
    actions: Sequence[Action],
    *,
    pool_uid: str,
    epoch: int,
    providers: Mapping[str, CapacityProvider],
    routers: Sequence[TrafficRouter],
    hold_effects: bool = False,
    metrics: ExecutorMetrics | None = None,
) -> ExecutionReport:
    """Apply ``actions`` in order; effects become ``withheld`` when ``hold_effects`` is set.

    Scale-ups run before weight writes because the engine orders them so; a failed scale
    does not stop the weight write that follows (the engine only shifts traffic to capacity
    it has seen ready). Errors are collected, never raised: every action gets its chance.
    """
    meter = metrics or NullMetrics()
    report = ExecutionReport()
    for action in actions:
        if isinstance(action, EmitEvent):
            report.events.append(action)
        elif isinstance(action, SetCondition):
            report.conditions.append(action)
        elif isinstance(action, RecordTransition):
            report.transitions.append(action)
        elif hold_effects:
            report.withheld.append(action)
        elif isinstance(action, ScalePlacement):
            await _scale(
                action, report=report, providers=providers, meter=meter, uid=pool_uid, epoch=epoch
            )
        elif isinstance(action, SetWeights):
            await _set_weights(action, report=report, routers=routers, meter=meter)
    for failure in report.failures:
        report.events.append(
            EmitEvent(type=EventType.WARNING, reason=failure.reason, message=failure.message)
        )
    return report


async def _scale(
    action: ScalePlacement,
    *,
    report: ExecutionReport,
    providers: Mapping[str, CapacityProvider],
    meter: ExecutorMetrics,
    uid: str,
    epoch: int,
) -> None:
    provider = providers.get(action.placement)
    with log_context(placement=action.placement):
        if provider is None:
            report.failures.append(
                ActionFailure(
                    action=action,
                    reason="NoProvider",
                    message=f"placement {action.placement} has no capacity provider",
                    retryable=False,
                )
            )
            return
        token = scale_token(pool_uid=uid, action=action, epoch=epoch)
        try:
            result = await provider.scale(desired=action.desired, token=token)
        except ProviderError as exc:
            meter.provider_call(placement=action.placement, operation="scale", error=str(exc.kind))
            log.warning("scale of %s to %d failed: %s", provider.name, action.desired, exc.kind)
            report.failures.append(
                ActionFailure(
                    action=action,
                    reason=f"Scale{exc.kind}",
                    message=f"scaling {action.placement} to {action.desired} failed: "
                    f"{exc.code or exc.kind}: {exc.message}",
                    retryable=exc.retryable,
                )
            )
            return
        meter.provider_call(placement=action.placement, operation="scale", error=None)
        log.info(
            "scaled %s to %d (changed=%s, reason=%s)",
            provider.name,
            action.desired,
            result.changed,
            action.reason,
        )
        report.scaled.append((action, result))


async def _set_weights(
    action: SetWeights,
    *,
    report: ExecutionReport,
    routers: Sequence[TrafficRouter],
    meter: ExecutorMetrics,
) -> None:
    for router in routers:
        try:
            result = await router.apply(action.weights)
        except RouterError as exc:
            log.warning("weights write to %s failed: %s", router.name, exc.reason)
            report.failures.append(
                ActionFailure(
                    action=action,
                    reason=f"Traffic{exc.reason}",
                    message=f"writing weights to {router.name} failed: {exc.message}",
                    retryable=exc.retryable,
                )
            )
            continue
        report.applied.append((router.name, result))
        if result.changed:
            log.info("weights on %s now %s (%s)", router.name, dict(action.weights), action.reason)
    if report.applied:
        meter.weights_applied(weights=action.weights)
