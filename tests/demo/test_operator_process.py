"""The operator process wrapper: readiness polling, and what it says when the operator dies."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from crossfade.testing.controlplane import free_port
from crossfade.testing.world import OperatorProcess


async def test_an_operator_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    process = OperatorProcess(
        argv=[sys.executable, "-c", "print('no kubeconfig found'); raise SystemExit(3)"],
        env=dict(os.environ),
        log_path=tmp_path / "operator.log",
        health_port=free_port(),
    )
    process.start()
    try:
        assert not await process.wait_ready(timeout_s=30.0)
    finally:
        process.stop()
    assert process.problem is not None
    assert process.problem.startswith("operator exited with code 3")
    assert "no kubeconfig found" in process.problem


async def test_a_ready_endpoint_is_seen_and_the_process_stopped(tmp_path: Path) -> None:
    port = free_port()
    server = (
        "import http.server as h\n"
        "class R(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if self.path == '/readyz' else 404); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        f"h.HTTPServer(('127.0.0.1', {port}), R).serve_forever()\n"
    )
    process = OperatorProcess(
        argv=[sys.executable, "-c", server],
        env=dict(os.environ),
        log_path=tmp_path / "operator.log",
        health_port=port,
    )
    process.start()
    try:
        assert await process.wait_ready(timeout_s=30.0)
        assert process.alive()
    finally:
        process.stop()
    assert not process.alive() and process.problem is None
