"""HTTP endpoints of the process: /metrics (Prometheus), /healthz (liveness), /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from crossfade.handlers.metrics import OperatorMetrics

# A live process answers /healthz; it is unhealthy when its loops stopped ticking.
STALL_LIMIT_S = 120.0
CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class ProcessHealth:
    """Liveness and readiness facts the operator updates as it runs."""

    clock: Callable[[], float] = time.monotonic
    last_tick: float = field(default_factory=time.monotonic)
    kopf_ready: bool = False
    leader: bool = False
    standby: bool = False

    def tick(self) -> None:
        """Record that the process is alive and working (its loops run)."""
        self.last_tick = self.clock()

    def live(self) -> bool:
        return self.clock() - self.last_tick <= STALL_LIMIT_S

    def ready(self) -> bool:
        """Ready when leading with kopf's watches up, or as a healthy standby."""
        return self.live() and ((self.leader and self.kopf_ready) or self.standby)


def make_app(*, metrics: OperatorMetrics, health: ProcessHealth) -> web.Application:
    """Return the aiohttp application serving the three endpoints."""

    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = health.live()
        return web.json_response({"live": ok}, status=200 if ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = health.ready()
        body = {"ready": ok, "leader": health.leader, "kopfReady": health.kopf_ready}
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_server(
    *, metrics: OperatorMetrics, health: ProcessHealth, host: str, port: int
) -> web.AppRunner:
    """Start serving; return the runner (call ``cleanup()`` to stop)."""
    runner = web.AppRunner(make_app(metrics=metrics, health=health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host=host, port=port).start()
    return runner
