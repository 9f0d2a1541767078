"""`crossfade run` loads no module it does not need: test doubles, moto, the sync client.

Every module the operator imports stays in its memory for the life of the process (the
import alone is ~120 MiB of the operator's RSS, bench/results/memory.md). This runs the real
``crossfade run`` entry point in a child process up to the point where it would start the
event loop (``asyncio.run`` is replaced by a recorder there) and reads ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

OPERATOR_SOURCE = Path(__file__).resolve().parents[2] / "operator"

RECORD_MODULES_AT_LOOP_START = textwrap.dedent(
    """
    import asyncio, json, sys

    def record(coroutine):
        coroutine.close()
        print(json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)))
        return 0

    asyncio.run = record
    from crossfade.cli import main
    main(["run", "--no-leader-election"])
    """
)

# Module prefixes `crossfade run` must not load at start-up, and why.
NOT_AT_START = {
    "crossfade.testing": "test doubles are never part of the operator",
    "moto": "the AWS test server is a test dependency",
    "kubernetes": "the sync client is only for `crossfade status` (cli.py)",
    "google.cloud.container_v1": "the GKE client is loaded with the first GKE placement",
    "crossfade.engine.simulate": "the simulator is for `crossfade simulate` only",
    "crossfade.sandbox": "the sandbox is for demos and benchmarks",
    "crossfade.demo": "the demo is for `crossfade demo` only",
    "crossfade.providers.gke": "provider modules load with the first placement naming one",
    "crossfade.providers.aws_eks": "provider modules load with the first placement naming one",
    "crossfade.providers.capi": "provider modules load with the first placement naming one",
    "crossfade.providers.karpenter": "provider modules load with the first placement naming one",
    "crossfade.routers.route53": "the Route53 client is built by the first Route53 router",
    "boto3": "loaded by the first EKS placement or Route53 router (~28 MiB)",
    "kubernetes_asyncio.client.models.v1_pod": (
        "generated models load on first use (handlers/lazy_kube_client.py, ~28 MiB)"
    ),
    "kubernetes_asyncio.client.api.apps_v1_api": (
        "generated API groups load on first use (handlers/lazy_kube_client.py)"
    ),
}


@pytest.fixture(scope="module")
def modules_at_start() -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(OPERATOR_SOURCE)}
    done = subprocess.run(
        [sys.executable, "-c", RECORD_MODULES_AT_LOOP_START],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    last_line = done.stdout.strip().splitlines()[-1]
    return set(json.loads(last_line))


def test_the_recorder_sees_the_operator(modules_at_start: set[str]) -> None:
    assert {"kopf", "kubernetes_asyncio", "crossfade.handlers.process"} <= modules_at_start


@pytest.mark.parametrize("prefix", sorted(NOT_AT_START))
def test_run_does_not_load(prefix: str, modules_at_start: set[str]) -> None:
    loaded = sorted(m for m in modules_at_start if m == prefix or m.startswith(prefix + "."))
    assert not loaded, f"{NOT_AT_START[prefix]}; loaded: {loaded[:5]}"
