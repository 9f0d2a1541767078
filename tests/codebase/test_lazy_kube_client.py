"""The lazy kubernetes_asyncio packages of `crossfade run` export what the real ones do.

``handlers/lazy_kube_client.py`` replaces the generated ``__init__.py`` of
``kubernetes_asyncio.client``, ``.client.api`` and ``.client.models`` by stand-ins that
import each name's submodule on first use. Each test runs two fresh interpreters, one with
the real packages and one with the stand-ins, and compares what every exported name
resolves to; a client upgrade that changes the layout fails here, not in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crossfade.handlers.lazy_kube_client import LAZY_PACKAGES, exported_names

OPERATOR_SOURCE = Path(__file__).resolve().parents[2] / "operator"

RESOLVE_EVERY_EXPORT = textwrap.dedent(
    """
    import importlib, json, sys
    if sys.argv[1] == "lazy":
        from crossfade.handlers.lazy_kube_client import load_lazily
        assert load_lazily()
    packages = json.loads(sys.argv[2])
    out = {}
    for package_name in packages:
        package = importlib.import_module(package_name)
        public = sorted(n for n in dir(package) if not n.startswith("_"))
        out[package_name] = {
            name: f"{getattr(package, name).__module__}.{getattr(package, name).__name__}"
            for name in public
            if isinstance(getattr(package, name), type)
        }
    out["version"] = importlib.import_module("kubernetes_asyncio.client").__version__
    out["models_loaded"] = sum(
        1 for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")
    )
    print(json.dumps(out))
    """
)


def _resolve(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", RESOLVE_EVERY_EXPORT, mode, json.dumps(sorted(LAZY_PACKAGES))],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(OPERATOR_SOURCE)},
        check=True,
        timeout=180,
    )
    resolved: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return resolved


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    return _resolve("real")


@pytest.fixture(scope="module")
def lazy() -> dict[str, Any]:
    return _resolve("lazy")


@pytest.mark.parametrize("package", sorted(LAZY_PACKAGES))
def test_every_class_the_real_package_exports_resolves_the_same_lazily(
    package: str, real: dict[str, Any], lazy: dict[str, Any]
) -> None:
    assert len(real[package]) > 10, "the real package exports its generated classes"
    assert lazy[package] == real[package]


def test_the_version_is_kept(real: dict[str, Any], lazy: dict[str, Any]) -> None:
    assert lazy["version"] == real["version"]


def test_resolving_every_name_loads_every_model_either_way(
    real: dict[str, Any], lazy: dict[str, Any]
) -> None:
    # Sanity of the comparison above: the lazy side did import each model it was asked for.
    assert lazy["models_loaded"] == real["models_loaded"] > 700


def test_the_export_table_reads_from_import_lines_only() -> None:
    source = textwrap.dedent(
        '''
        """doc"""
        from __future__ import absolute_import
        __version__ = "1.0"
        from kubernetes_asyncio.client.api_client import ApiClient
        from kubernetes_asyncio.client.models.v1_node import V1Node
        from os import path
        '''
    )
    assert exported_names(source) == {
        "ApiClient": "kubernetes_asyncio.client.api_client",
        "V1Node": "kubernetes_asyncio.client.models.v1_node",
    }
