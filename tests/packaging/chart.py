"""Helpers for the packaging tests: run the real helm binary and read what it renders."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossfade.testing.controlplane import REPO_ROOT, ensure_binaries

CHART_DIR = REPO_ROOT / "helm" / "crossfade"
VALUES_DIR = Path(__file__).parent / "values"
# helm built from the Go module has no Kubernetes version stamped in; name the one we test.
KUBE_VERSION = "1.36.0"
RELEASE_NAMESPACE = "crossfade-system"

# Values files the tests render, apply and scan: the defaults plus every non-default path.
VALUES_CASES: dict[str, tuple[str, ...]] = {
    "default": (),
    "production": ("production.yaml",),
    "namespaced": ("namespaced.yaml",),
}


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""


def helm_binary() -> Path:
    return ensure_binaries() / "helm"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_args(files: Iterable[str], sets: Mapping[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["-f", str(VALUES_DIR / name)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render_text(
    *,
    release: str = "cf",
    namespace: str = RELEASE_NAMESPACE,
    files: Sequence[str] = (),
    sets: Mapping[str, str] | None = None,
) -> str:
    """Return `helm template` output for the chart with the given values."""
    return helm(
        "template",
        release,
        str(CHART_DIR),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *values_args(files, sets),
    ).stdout


@dataclass(frozen=True)
class Rendered:
    """Objects rendered by helm, with lookups by kind."""

    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}


def render(
    *,
    release: str = "cf",
    namespace: str = RELEASE_NAMESPACE,
    files: Sequence[str] = (),
    sets: Mapping[str, str] | None = None,
) -> Rendered:
    text = render_text(release=release, namespace=namespace, files=files, sets=sets)
    return Rendered(tuple(doc for doc in yaml.safe_load_all(text) if doc))


def chart_crd_documents() -> list[dict[str, Any]]:
    """Return every CRD in the chart's crds/ directory (what helm installs first)."""
    docs: list[dict[str, Any]] = []
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def pod_spec(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one("Deployment")["spec"]["template"]["spec"]
    return spec


def rbac_rules(rendered: Rendered) -> list[tuple[str, str | None, dict[str, Any]]]:
    """Return (kind of role, namespace or None, rule) for every rule the chart grants."""
    rules: list[tuple[str, str | None, dict[str, Any]]] = []
    for kind in ("ClusterRole", "Role"):
        for role in rendered.of_kind(kind):
            namespace = role["metadata"].get("namespace")
            rules.extend((kind, namespace, rule) for rule in role.get("rules", []))
    return rules
