"""Write crds/inferencepools.crossfade.dev.yaml and docs/api.md (`make crds`); --check diffs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossfade.api.constants import CRD_NAME
from crossfade.api.crd import render_crd
from crossfade.api.docs import render_docs

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = Path("crds") / f"{CRD_NAME}.yaml"
DOCS_PATH = Path("docs") / "api.md"


def generated_files() -> dict[Path, str]:
    """Return every generated file (relative path -> content)."""
    return {CRD_PATH: render_crd(), DOCS_PATH: render_docs()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed file differs, write nothing"
    )
    args = parser.parse_args(argv)
    stale: list[str] = []
    for relative, content in generated_files().items():
        target = args.root / relative
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == content:
            continue
        stale.append(str(relative))
        if not args.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
    verb = "stale" if args.check else "written"
    for name in stale:
        print(f"{verb}: {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
