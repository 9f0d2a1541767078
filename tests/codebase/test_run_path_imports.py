"""`crossfade run` loads only what the operator needs: no test doubles, no unused SDKs.

Every module imported stays in the operator's memory for its lifetime (kubernetes_asyncio's
~860 model modules alone are ~90 MiB, which kopf imports whenever it is installed). The run
path imports provider modules (and their cloud SDKs) only when a pool names that provider,
and never the simulator, the demo or ``crossfade.testing``. A fresh interpreter imports what
``crossfade run`` imports before it starts the event loop; this test fails when a module
level import drags one of these in again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
# Imported by `crossfade run` before asyncio.run (cli._cmd_run and what it imports).
RUN_PATH = ("crossfade.cli", "crossfade.handlers.process", "crossfade.logging")
# Module prefixes the run path must not load.
FORBIDDEN = (
    "crossfade.testing",
    "crossfade.sandbox",
    "crossfade.demo",
    "crossfade.demo_report",
    "crossfade.simulation_report",
    "crossfade.engine.simulate",
    "crossfade.providers.gke",
    "crossfade.providers.aws_eks",
    "crossfade.providers.capi",
    "crossfade.providers.karpenter",
    "google.cloud.container_v1",
    "moto",
)


def modules_after_importing(names: tuple[str, ...]) -> list[str]:
    """sys.modules of a fresh interpreter after importing ``names``."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=OPERATOR_DIR,
        env={"PYTHONPATH": str(OPERATOR_DIR)},
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def loaded_forbidden(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in FORBIDDEN)]


def test_the_run_path_imports_no_test_double_simulator_or_provider_sdk() -> None:
    loaded = modules_after_importing(RUN_PATH)
    assert "crossfade.handlers.process" in loaded  # the import really ran
    assert loaded_forbidden(loaded) == []


def test_the_check_sees_a_forbidden_module_when_one_is_imported() -> None:
    loaded = modules_after_importing((*RUN_PATH, "crossfade.providers.gke"))
    assert "crossfade.providers.gke" in loaded_forbidden(loaded)
