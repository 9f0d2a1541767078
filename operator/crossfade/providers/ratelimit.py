"""Client-side token buckets, one per cloud API, so crossfade stays under the API's rate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# AWS documents about 5 requests/s per account for Route53; EKS and Auto Scaling describe
# calls share an account-wide bucket as well. crossfade takes well under half of each so
# other tools in the account keep their share.
ROUTE53_RATE_PER_S = 2.0
ROUTE53_BURST = 4
EKS_RATE_PER_S = 5.0
EKS_BURST = 10
AUTOSCALING_RATE_PER_S = 5.0
AUTOSCALING_BURST = 10
# A call never waits longer than this for a token; it reports Throttled instead, so one
# busy API cannot hang the reconcile loop.
DEFAULT_MAX_WAIT_S = 2.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Refill rate and burst size of one bucket."""

    rate_per_s: float
    burst: int


DEFAULT_BUCKETS: dict[str, BucketSpec] = {
    "route53": BucketSpec(rate_per_s=ROUTE53_RATE_PER_S, burst=ROUTE53_BURST),
    "eks": BucketSpec(rate_per_s=EKS_RATE_PER_S, burst=EKS_BURST),
    "autoscaling": BucketSpec(rate_per_s=AUTOSCALING_RATE_PER_S, burst=AUTOSCALING_BURST),
}


class TokenBucket:
    """A token bucket: ``burst`` tokens at most, refilled at ``rate_per_s``.

    ``reserve`` is the non-blocking core (it takes a token now or says how long to wait);
    ``acquire`` waits at most ``max_wait_s`` and returns False instead of waiting longer.
    Thread-safe, because boto3 calls run in worker threads.
    """

    def __init__(self, *, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated_at = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        elapsed_s = max(0.0, now - self._updated_at)
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s)
        self._updated_at = now

    @property
    def tokens(self) -> float:
        """Return the tokens available now (fractional while refilling)."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    def reserve(self, *, max_wait_s: float) -> float | None:
        """Take one token, possibly in advance; return seconds to wait, or None if too long.

        A reservation that would wait longer than ``max_wait_s`` takes nothing.
        """
        with self._lock:
            self._refill(self._clock())
            wait_s = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_s
            if wait_s > max_wait_s:
                return None
            self._tokens -= 1
            return wait_s

    async def acquire(
        self, *, max_wait_s: float = DEFAULT_MAX_WAIT_S, sleep: Sleep = asyncio.sleep
    ) -> bool:
        """Wait for a token (at most ``max_wait_s``); return False when none came in time."""
        wait_s = self.reserve(max_wait_s=max_wait_s)
        if wait_s is None:
            return False
        if wait_s > 0:
            await sleep(wait_s)
        return True

    def acquire_blocking(self, *, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> bool:
        """Like ``acquire`` for worker threads (boto3 calls run in ``asyncio.to_thread``)."""
        wait_s = self.reserve(max_wait_s=max_wait_s)
        if wait_s is None:
            return False
        if wait_s > 0:
            time.sleep(wait_s)
        return True


class RateLimiters:
    """One token bucket per API name (``eks``, ``route53``, ``autoscaling``), made on demand.

    The operator keeps one instance for the whole process: AWS limits are per account and
    region, so every pool and placement must draw from the same buckets.
    """

    def __init__(
        self,
        specs: dict[str, BucketSpec] | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._specs = dict(DEFAULT_BUCKETS if specs is None else specs)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, api: str) -> TokenBucket:
        """Return the bucket of ``api`` (a generous default when the API is not listed)."""
        with self._lock:
            found = self._buckets.get(api)
            if found is None:
                spec = self._specs.get(api, BucketSpec(rate_per_s=EKS_RATE_PER_S, burst=EKS_BURST))
                found = TokenBucket(rate_per_s=spec.rate_per_s, burst=spec.burst, clock=self._clock)
                self._buckets[api] = found
            return found
