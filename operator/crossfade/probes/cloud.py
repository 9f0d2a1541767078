"""Cloud probe: a provider's ``describe()`` behind a circuit breaker, as a ProviderObservation.

A cloud control-plane outage shows up here (errors, then an open breaker) before serving
fails, and an open breaker stops the operator from hammering an API that is down.

A throttled describe is not news about the node group. While the last answered describe
is younger than ``stale_after_s`` the probe reports "no fresh observation" (None) and the
engine keeps that answer with its age; only a throttle that outlasts it becomes the
placement's ``providerError``. Without this, a describe budget that serves every other
pass flips ``providerError`` (and three conditions, and the durable engine state) on
every pass. A refusal by crossfade's own token bucket never reached the cloud, so it does
not count against the breaker either; a throttle the cloud answered does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from crossfade.engine.observations import ProviderErrorKind, ProviderObservation
from crossfade.probes.breaker import CircuitBreaker
from crossfade.providers.base import NodeGroupState
from crossfade.providers.errors import ProviderError

log = logging.getLogger(__name__)

DEFAULT_DESCRIBE_TIMEOUT_S = 10.0
MESSAGE_MAX_CHARS = 300
# Errors that say the API itself is unwell; the others are answers from a working API.
BREAKER_ERROR_KINDS = frozenset({ProviderErrorKind.THROTTLED, ProviderErrorKind.UNAVAILABLE})
# How long the last answered describe stands in for throttled ones: three EKS describe
# cache periods (providers/aws_eks.py DESCRIBE_CACHE_TTL_S), so one or two refused
# refreshes never reach status.
DEFAULT_STALE_AFTER_S = 90.0
# The code crossfade's own token bucket gives a call it refused (providers/aws_api.py).
CLIENT_RATE_LIMITED = "ClientRateLimited"


class Describable(Protocol):
    """The part of ``providers.base.CapacityProvider`` this probe uses."""

    async def describe(self) -> NodeGroupState: ...


def error_kind_of(exc: BaseException) -> ProviderErrorKind:
    """The typed kind of a provider error; anything untyped counts as the API being down."""
    return exc.kind if isinstance(exc, ProviderError) else ProviderErrorKind.UNAVAILABLE


def refused_locally(exc: BaseException) -> bool:
    """Return True when crossfade's own token bucket refused the call (it was never sent)."""
    return isinstance(exc, ProviderError) and exc.code == CLIENT_RATE_LIMITED


class CloudProbe:
    """Describes one placement's node group through its provider's shared breaker."""

    def __init__(
        self,
        *,
        placement: str,
        provider: Describable,
        breaker: CircuitBreaker,
        timeout_s: float = DEFAULT_DESCRIBE_TIMEOUT_S,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.placement = placement
        self._provider = provider
        self._breaker = breaker
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self._wall_clock = wall_clock
        self._last_answer: ProviderObservation | None = None  # the last describe that answered

    async def observe(self) -> ProviderObservation | None:
        """Describe once; errors become the observation's ``error``, never an exception.

        None means "no fresh observation": the describe was throttled while the last
        answer is still young enough to stand (see the module docstring).
        """
        at = self._wall_clock()
        if not self._breaker.allow():
            snap = self._breaker.snapshot()
            return ProviderObservation(
                placement=self.placement,
                at=at,
                error=ProviderErrorKind.UNAVAILABLE,
                message=(
                    f"CircuitOpen: {snap.consecutive_failures} consecutive API failures, "
                    f"error rate {snap.error_rate:.0%}; not calling until the cool-down ends"
                ),
            )
        try:
            async with asyncio.timeout(self.timeout_s):
                state = await self._provider.describe()
        except TimeoutError:
            self._breaker.record_failure()
            return self._error(at, ProviderErrorKind.UNAVAILABLE, f"Timeout: {self.timeout_s:g}s")
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        except Exception as exc:  # the provider contract: typed ProviderError; be safe anyway
            kind = error_kind_of(exc)
            if refused_locally(exc):
                self._breaker.release()  # never sent: no verdict on the API
            elif kind in BREAKER_ERROR_KINDS:
                self._breaker.record_failure()
            else:
                self._breaker.record_success()  # the API answered, it is up
            code = exc.code if isinstance(exc, ProviderError) and exc.code else type(exc).__name__
            if kind is ProviderErrorKind.THROTTLED and self._last_answer_stands(at):
                log.debug(
                    "cloud probe throttled; the last answer stands",
                    extra={"placement": self.placement, "code": code},
                )
                return None
            return self._error(at, kind, f"{code}: {exc}")
        self._breaker.record_success()
        self._last_answer = self._observation(at, state)
        return self._last_answer

    async def observe_or_last(self) -> ProviderObservation:
        """Like ``observe``, but a throttled describe gives the standing last answer again.

        For consumers that need an observation every time (the probe scheduler); the
        engine skips an observation that is not newer than the one it holds, so the
        repeated answer is still "no fresh observation" to it.
        """
        seen = await self.observe()
        if seen is not None:
            return seen
        assert self._last_answer is not None  # observe() gives None only while one stands
        return self._last_answer

    def _last_answer_stands(self, at: float) -> bool:
        last = self._last_answer
        return last is not None and at - last.at < self.stale_after_s

    def _error(self, at: float, kind: ProviderErrorKind, message: str) -> ProviderObservation:
        log.info(
            "cloud probe error",
            extra={"placement": self.placement, "error": kind.value, "detail": message},
        )
        return ProviderObservation(
            placement=self.placement, at=at, error=kind, message=message[:MESSAGE_MAX_CHARS]
        )

    def _observation(self, at: float, state: NodeGroupState) -> ProviderObservation:
        ice = [issue for issue in state.health_issues if issue.insufficient_capacity]
        issues = "; ".join(f"{i.code}: {i.message}" for i in state.health_issues)
        message = f"{state.status}" + (f" ({issues})" if issues else "")
        return ProviderObservation(
            placement=self.placement,
            at=at,
            desired=state.desired,
            ready=state.ready,
            min_size=state.min_size,
            max_size=state.max_size,
            updating=state.updating,
            error=ProviderErrorKind.INSUFFICIENT_CAPACITY if ice else None,
            message=message[:MESSAGE_MAX_CHARS],
        )
