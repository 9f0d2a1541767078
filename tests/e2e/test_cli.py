"""`crossfade status` against the real apiserver, and the CLI's lazy delegation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from crossfade import cli
from crossfade.testing.controlplane import REPO_ROOT

from .world import World


async def test_status_prints_the_pool_from_the_cluster(world: World) -> None:
    # The CLI is synchronous; run it in a thread so the fake endpoints keep serving.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "crossfade.cli", "status", "-n", world.namespace],
        cwd=REPO_ROOT,
        env={**os.environ, "KUBECONFIG": str(world.cluster.kubeconfig_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{world.namespace}/chat: ")
    assert "EKSNodeGroup" in result.stdout and "GKENodePool" in result.stdout


def test_run_options_are_parsed() -> None:
    args = cli.build_parser().parse_args(
        ["run", "-n", "a", "-n", "b", "--health-port", "9000", "--no-leader-election"]
    )
    assert args.namespace == ["a", "b"]
    assert args.health_port == 9000 and args.no_leader_election


def test_simulate_and_demo_delegate_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []

    def fake_delegate(module: str, argv: list[str]) -> int:
        seen.append((module, list(argv)))
        return 7

    monkeypatch.setattr(cli, "_delegate", fake_delegate)
    assert cli.main(["simulate", "--scenario", "x.yaml"]) == 7
    assert cli.main(["demo"]) == 7
    assert seen == [
        ("crossfade.simulation_report", ["--scenario", "x.yaml"]),
        ("crossfade.demo", []),
    ]


def test_e2e_figures_replace_only_the_scenarios_measured_again() -> None:
    from .conftest import results_rows

    previous: list[dict[str, object]] = [
        {"scenario": "scenario1", "figure": "detection_to_shift_s", "value": 9.0},
        {"scenario": "scenario4", "figure": "takeover_s", "value": 3.0},
    ]
    rows = results_rows({"scenario1": {"detection_to_shift_s": 4.5}}, previous)
    assert rows == [
        {"scenario": "scenario1", "figure": "detection_to_shift_s", "value": 4.5},
        {"scenario": "scenario4", "figure": "takeover_s", "value": 3.0},
    ]
