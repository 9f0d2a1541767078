"""`make demo`'s sandbox starts real apiservers with our CRD and stops every process."""

from __future__ import annotations

import socket
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import yaml

from crossfade.testing.controlplane import REPO_ROOT, cache_dir

pytestmark = pytest.mark.slow


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_sandbox_serves_the_crd_and_cleans_up() -> None:
    kubectl = cache_dir() / "bin" / "kubectl"
    script = (
        "import subprocess, sys\n"
        "import crossfade.sandbox as s\n"
        "with s.running_sandbox() as box:\n"
        "    kubeconfig = str(box.management.kubeconfig_path)\n"
        "    out = subprocess.run([sys.argv[1], '--kubeconfig', kubeconfig, 'get', 'crd',"
        " '-o', 'name'], capture_output=True, text=True, check=True).stdout\n"
        "    print(out)\n"
        "    print('SERVERS', *[c.server for c in box.clusters.values()])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(kubectl)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "customresourcedefinition.apiextensions.k8s.io/httproutes.gateway.networking.k8s.io" in (
        result.stdout
    )
    crd_files = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    for path in crd_files:
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}" in result.stdout
    servers = next(line for line in result.stdout.splitlines() if line.startswith("SERVERS"))
    ports = [urlparse(url).port for url in servers.split()[1:]]
    assert len(ports) == 3
    assert not any(port_open(port) for port in ports if port is not None)
