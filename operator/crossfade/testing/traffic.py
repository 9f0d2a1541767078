"""A traffic generator that behaves like a Gateway data plane in front of fake inference servers.

It reads the HTTPRoute's backendRef weights from the real apiserver (as a gateway would,
refreshing every ``route_refresh_s``), picks a backend per request in proportion to the
weights, sends a tiny completion to that backend's fake OpenAI-compatible server and
records every response. From the records it reports what a client saw during an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = "v1"
REQUEST_TIMEOUT_S = 2.0
COMPLETION_BODY = {"model": "demo", "prompt": "ping", "max_tokens": 1}


@dataclass(frozen=True)
class RequestRecord:
    """One client request: when, to which backend, and whether it succeeded."""

    at: float
    backend: str | None
    ok: bool
    status: int | None
    latency_s: float


@dataclass
class HTTPRouteWeights:
    """Reads one HTTPRoute's backendRef weights by backend name (all rules summed)."""

    api: client.ApiClient
    namespace: str
    name: str

    async def read(self) -> dict[str, int]:
        custom = client.CustomObjectsApi(self.api)
        route = await custom.get_namespaced_custom_object(
            GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "httproutes", self.name
        )
        weights: dict[str, int] = {}
        for rule in route.get("spec", {}).get("rules", []):
            for ref in rule.get("backendRefs", []):
                weights[ref["name"]] = weights.get(ref["name"], 0) + int(ref.get("weight", 1))
        return weights


@dataclass
class TrafficGenerator:
    """Sends requests at a steady rate, routed by the HTTPRoute's current weights."""

    weights: HTTPRouteWeights
    endpoints: Mapping[str, str]
    rate_per_s: float = 20.0
    route_refresh_s: float = 0.2
    seed: int = 7
    records: list[RequestRecord] = field(default_factory=list)
    current_weights: dict[str, int] = field(default_factory=dict)

    def _pick(self, rng: random.Random) -> str | None:
        candidates = [(name, w) for name, w in self.current_weights.items() if w > 0]
        if not candidates:
            return None
        names = [name for name, _ in candidates]
        chosen: str = rng.choices(names, weights=[w for _, w in candidates], k=1)[0]
        return chosen

    async def _refresh_routes(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(ApiException, OSError, KeyError):
                self.current_weights = await self.weights.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.route_refresh_s)

    async def _send(self, session: aiohttp.ClientSession, backend: str | None) -> None:
        started = time.monotonic()
        at = time.time()
        if backend is None or backend not in self.endpoints:
            # A gateway with no weighted backend answers 500 itself.
            self.records.append(RequestRecord(at, backend, False, None, 0.0))
            return
        url = self.endpoints[backend].rstrip("/") + "/v1/completions"
        try:
            async with session.post(url, json=COMPLETION_BODY) as response:
                await response.read()
                ok, status = response.status == 200, response.status
        except (aiohttp.ClientError, TimeoutError):
            ok, status = False, None
        self.records.append(RequestRecord(at, backend, ok, status, time.monotonic() - started))

    async def run(self, stop: asyncio.Event) -> None:
        """Send traffic until ``stop`` is set; in-flight requests finish first."""
        rng = random.Random(self.seed)  # noqa: S311 - load shaping, not security
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        refresher = asyncio.create_task(self._refresh_routes(stop))
        in_flight: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            interval = 1.0 / self.rate_per_s
            next_at = time.monotonic()
            while not stop.is_set():
                task = asyncio.create_task(self._send(session, self._pick(rng)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), timeout=max(0.0, next_at - time.monotonic())
                    )
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        await refresher


@dataclass(frozen=True)
class TrafficSummary:
    """What clients saw over a window."""

    requests: int
    failed: int
    by_backend: dict[str, int]

    @property
    def failed_share(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def summarize(
    records: Sequence[RequestRecord], *, start: float = 0.0, end: float = float("inf")
) -> TrafficSummary:
    """Summarize the requests sent in ``[start, end)`` (epoch seconds)."""
    window = [r for r in records if start <= r.at < end]
    by_backend: dict[str, int] = {}
    for record in window:
        key = record.backend or "(none)"
        by_backend[key] = by_backend.get(key, 0) + 1
    return TrafficSummary(
        requests=len(window), failed=sum(1 for r in window if not r.ok), by_backend=by_backend
    )


def success_rate_series(
    records: Sequence[RequestRecord], *, bucket_s: float = 1.0
) -> list[tuple[float, float, int]]:
    """Return (bucket start, success rate, requests) per time bucket, oldest first."""
    buckets: dict[int, list[RequestRecord]] = {}
    for record in records:
        buckets.setdefault(int(record.at // bucket_s), []).append(record)
    return [
        (key * bucket_s, sum(r.ok for r in group) / len(group), len(group))
        for key, group in sorted(buckets.items())
    ]
