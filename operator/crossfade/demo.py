"""``crossfade demo``: a sandbox with real apiservers and the InferencePool CRD installed.

Today the demo starts the sandbox (see crossfade.sandbox), applies the quickstart pool when it
exists, prints how to look at it and cleans up on Ctrl-C; it stops by itself after a few
seconds when stdin is not a terminal, so it also runs unattended.
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from crossfade.sandbox import SANDBOX_DIR, running_sandbox, wait_for_stop
from crossfade.testing.controlplane import REPO_ROOT

QUICKSTART = REPO_ROOT / "examples" / "quickstart.yaml"


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return a process exit code."""
    parser = argparse.ArgumentParser(prog="crossfade demo", description=__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (None if sys.stdin.isatty() else 5.0)
    started = time.monotonic()
    with running_sandbox() as sandbox:
        print(f"sandbox up in {time.monotonic() - started:.1f} s: " + ", ".join(sandbox.clusters))
        if QUICKSTART.exists():
            docs = [d for d in yaml.safe_load_all(QUICKSTART.read_text()) if d]
            sandbox.management.apply_manifest(docs, namespace="default")
            print(f"applied {QUICKSTART.relative_to(REPO_ROOT)} ({len(docs)} objects)")
        kubectl = REPO_ROOT / ".cache" / "bin" / "kubectl"
        print(f"\n  export KUBECONFIG={SANDBOX_DIR / 'management.kubeconfig'}")
        print(f"  {kubectl} get inferencepools.crossfade.dev -A\n")
        print("Ctrl-C stops every process." if seconds is None else f"Stopping in {seconds:.0f} s.")
        sys.stdout.flush()
        wait_for_stop(seconds)
    print("demo finished: every process stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
