"""Ctrl-C during `crossfade demo` stops every process it started (apiservers, etcd, operator)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossfade.demo import EXIT_INTERRUPTED
from crossfade.testing.controlplane import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STARTED_LINE = "waiting for steady traffic"
START_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 60.0


def restore_default_sigint() -> None:
    """In the child before exec: SIGINT at its default, as in a terminal's foreground job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def descendants(root: int) -> set[int]:
    """Every live process below ``root``, from /proc (parents are read once per process)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "crossfade.demo", "--non-interactive", "--out", str(tmp_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # its own process group, as a shell job would be
            # A terminal's foreground job has SIGINT at its default; a suite started in the
            # background of a non-interactive shell (`make test &`, nohup) has it ignored,
            # and children inherit that. Give the demo what a terminal gives it.
            preexec_fn=restore_default_sigint,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED_LINE not in log.read_text(errors="replace"):
            assert demo.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "demo did not start in time"
            time.sleep(0.5)
        children = descendants(demo.pid)
        commands = " ".join(
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            for pid in children
            if alive(pid)
        )
        # The sandbox (etcd + 3 apiservers) and the operator are running below the demo.
        assert "kube-apiserver" in commands and "etcd" in commands
        assert "crossfade.cli" in commands
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        code = demo.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
    output = log.read_text(errors="replace")
    assert code == EXIT_INTERRUPTED, output
    assert "every process stopped" in output
    left = sorted(pid for pid in children if alive(pid))
    assert not left, f"still running after Ctrl-C: {left}\n{output}"
