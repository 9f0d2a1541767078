"""A local sandbox: real apiservers (management + one per cloud) with every CRD crossfade uses.

Used by ``crossfade demo`` and handy on its own: ``python -m crossfade.sandbox`` starts it,
prints the kubeconfigs and waits for Ctrl-C (or ``--seconds N``), then stops every process.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crossfade.testing.controlplane import (
    REPO_ROOT,
    ControlPlane,
    TestCluster,
    cache_dir,
    upstream_crds,
)

OUR_CRDS_DIR = REPO_ROOT / "crds"
SANDBOX_DIR = REPO_ROOT / "demo-out" / "sandbox"
CLUSTER_NAMES = ("management", "aws", "gcp")


@dataclass(frozen=True)
class Sandbox:
    """The running clusters of a sandbox, by name."""

    plane: ControlPlane
    clusters: dict[str, TestCluster]

    @property
    def management(self) -> TestCluster:
        return self.clusters["management"]


@contextmanager
def running_sandbox(*, workdir: Path = SANDBOX_DIR) -> Iterator[Sandbox]:
    """Start the sandbox; on exit stop every process it started."""
    workdir.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane.create()
    try:
        clusters = {name: plane.start_cluster(name) for name in CLUSTER_NAMES}
        management = clusters["management"]
        management.install_crds(sorted(OUR_CRDS_DIR.glob("*.yaml")))
        management.install_crds(upstream_crds("gateway-api") + upstream_crds("inference-extension"))
        for name, cluster in clusters.items():
            (workdir / f"{name}.kubeconfig").write_text(cluster.kubeconfig_path.read_text())
        yield Sandbox(plane=plane, clusters=clusters)
    finally:
        plane.stop()


def wait_for_stop(seconds: float | None) -> None:
    """Block until SIGINT/SIGTERM arrives or ``seconds`` pass (forever when None)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait(timeout=seconds)


def main(argv: list[str] | None = None) -> int:
    """Start the sandbox, print how to use it, wait for Ctrl-C or ``--seconds``."""
    parser = argparse.ArgumentParser(prog="crossfade sandbox", description=__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C; 5 when stdin is no terminal)",
    )
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (None if sys.stdin.isatty() else 5.0)
    with running_sandbox() as sandbox:
        kubectl = cache_dir() / "bin" / "kubectl"
        print("crossfade sandbox is up:")
        for name, cluster in sandbox.clusters.items():
            print(
                f"  {name:<11} {cluster.server}  kubeconfig: {SANDBOX_DIR / (name + '.kubeconfig')}"
            )
        print("\nTry:")
        print(f"  export KUBECONFIG={SANDBOX_DIR / 'management.kubeconfig'}")
        print(f"  {kubectl} apply -f examples/quickstart.yaml")
        print(f"  {kubectl} get inferencepools.crossfade.dev")
        print(
            "\nCtrl-C stops every process."
            if seconds is None
            else f"\nStopping in {seconds:.0f} s."
        )
        sys.stdout.flush()
        wait_for_stop(seconds)
    print("sandbox stopped, all processes ended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
