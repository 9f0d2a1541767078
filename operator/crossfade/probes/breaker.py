"""Per-provider circuit breaker: stop calling a failing cloud API, try again after a cool-down.

closed --N consecutive failures--> open --cool-down elapsed--> half-open (one trial call)
half-open --trial succeeds--> closed;  half-open --trial fails--> open (cool-down restarts)

The clock is injected, so transitions are tested with a fake one.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_COOL_DOWN_S = 30.0
ERROR_RATE_WINDOW_CALLS = 20


class BreakerState(enum.StrEnum):
    """Where a breaker stands."""

    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker's state for status and evidence."""

    state: BreakerState
    consecutive_failures: int
    opened_at: float | None
    error_rate: float


class CircuitBreaker:
    """Counts consecutive failures of calls to one provider and gates further calls."""

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cool_down_s: float = DEFAULT_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cool_down_s < 0:
            raise ValueError("failure_threshold must be >= 1 and cool_down_s >= 0")
        self.failure_threshold = failure_threshold
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._recent: deque[bool] = deque(maxlen=ERROR_RATE_WINDOW_CALLS)

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self._cool_down_over():
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open exactly one trial call is allowed."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._trial_in_flight:
            return False
        self._state = BreakerState.HALF_OPEN
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self._recent.append(True)
        self._consecutive_failures = 0
        self._trial_in_flight = False
        self._state = BreakerState.CLOSED
        self._opened_at = None

    def record_failure(self) -> None:
        self._recent.append(False)
        self._consecutive_failures += 1
        trial_failed = self._state is BreakerState.HALF_OPEN
        self._trial_in_flight = False
        if trial_failed or self._consecutive_failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        """Forget a trial call that ended without a verdict (e.g. it was cancelled)."""
        self._trial_in_flight = False

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            state=self.state,
            consecutive_failures=self._consecutive_failures,
            opened_at=self._opened_at,
            error_rate=self.error_rate(),
        )

    def error_rate(self) -> float:
        """Share of failed calls among the last ``ERROR_RATE_WINDOW_CALLS`` (0.0 when none)."""
        if not self._recent:
            return 0.0
        return sum(1 for ok in self._recent if not ok) / len(self._recent)

    def _cool_down_over(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at >= self.cool_down_s


class BreakerRegistry:
    """One breaker per provider key (e.g. ``aws/eu-west-1``), shared by every placement on it."""

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cool_down_s: float = DEFAULT_COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = (failure_threshold, cool_down_s)
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_provider(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            threshold, cool_down_s = self._settings
            breaker = CircuitBreaker(
                failure_threshold=threshold, cool_down_s=cool_down_s, clock=self._clock
            )
            self._breakers[key] = breaker
        return breaker

    def snapshots(self) -> dict[str, BreakerSnapshot]:
        return {key: breaker.snapshot() for key, breaker in sorted(self._breakers.items())}
