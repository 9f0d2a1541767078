"""kopf's operator loop in the test's own process, against a real test apiserver.

The caller registers its handlers on a fresh ``kopf.OperatorRegistry`` and points
``KUBECONFIG`` at the cluster; ``kopf_running`` logs in from it, runs kopf standalone in one
namespace (no cluster-wide scanning, no Events unless ``settings`` asks for them) and stops
it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kopf

STOP_WAIT_S = 30.0


@contextlib.asynccontextmanager
async def kopf_running(
    registry: kopf.OperatorRegistry,
    namespace: str,
    *,
    settings: kopf.OperatorSettings | None = None,
) -> AsyncIterator[None]:
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    if settings is None:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False
    settings.scanning.disabled = True
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            namespaces=[namespace],
            standalone=True,
            stop_flag=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=STOP_WAIT_S)
