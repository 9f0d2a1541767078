"""`crossfade run`, started with the chart's own arguments and authenticated as the chart's
ServiceAccount (a TokenRequest token, nothing else), carries out a failover end to end.

The world (moto EKS, the GKE test server, fake inference endpoints, Services, HTTPRoute and
pool) comes from the end-to-end suite's fixtures; only the operator's identity and command
line differ from there: they are the chart's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from crossfade.testing.controlplane import REPO_ROOT, TestCluster, free_port
from tests.packaging.chart import pod_spec, render
from tests.packaging.cluster import apply_objects, service_account_token

try:
    from crossfade.testing.inference_server import Behaviour
    from tests.e2e.conftest import aws_env, e2e_crds, moto_server, world  # noqa: F401 (fixtures)
    from tests.e2e.world import World, eventually
except ImportError as missing:  # the e2e suite is another engineer's; it may move
    pytest.skip(f"end-to-end fixtures unavailable: {missing}", allow_module_level=True)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
SHIFT_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0
TOKEN_LIFETIME_S = 3600
# What an apiserver says when RBAC refuses; none of it may appear in the operator's log.
REFUSALS = ("forbidden", "Forbidden", " 403", "Not enough permissions")


def _service_account_kubeconfig(
    cluster: TestCluster, *, namespace: str, account: str
) -> dict[str, Any]:
    token = service_account_token(
        cluster, namespace=namespace, account=account, lifetime_s=TOKEN_LIFETIME_S
    )
    admin = cluster.kubeconfig_dict(context_name="chart")
    admin["users"] = [{"name": "chart-sa", "user": {"token": token}}]
    admin["contexts"] = [{"name": "chart", "context": {"cluster": "chart", "user": "chart-sa"}}]
    return admin


def _secret_values(world: World) -> dict[str, str]:
    """rbac.secrets entries for every Secret the pool names (what an installer would list)."""
    spec = world.pool()["spec"]
    names = {p["clusterRef"]["name"] for p in spec["placements"] if p.get("clusterRef")}
    headers = ((spec.get("healthCheck") or {}).get("inference") or {}).get("headersSecretRef")
    if headers:
        names.add(headers["name"])
    values = {}
    for index, name in enumerate(sorted(names)):
        values[f"rbac.secrets[{index}].name"] = name
        values[f"rbac.secrets[{index}].namespace"] = world.namespace
    return values


def _chart_values(world: World, *, mode: str) -> dict[str, str]:
    values = _secret_values(world)
    if mode == "namespaced":
        values["watchNamespaces[0]"] = world.namespace
    return values


def _operator_command(world: World, *, port: int, mode: str) -> list[str]:
    """The chart's container args for this release, run through the image's entrypoint."""
    rendered = render(
        release="e2e",
        namespace=world.namespace,
        sets={
            **_chart_values(world, mode=mode),
            "httpPort": str(port),
            # Test-only: bind loopback, and look every second instead of every period.
            "operator.extraArgs[0]": "--health-host=127.0.0.1",
            "operator.extraArgs[1]": "--period=1",
        },
    )
    args = pod_spec(rendered)["containers"][0]["args"]
    return [sys.executable, "-m", "crossfade.cli", "run", *args]


def _peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), for sizing the chart's requests."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _start(argv: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
async def test_chart_account_runs_a_failover_end_to_end(
    mode: str, world: World, management_cluster: TestCluster, tmp_path: Path
) -> None:
    rendered = render(
        release="e2e", namespace=world.namespace, sets=_chart_values(world, mode=mode)
    )
    apply_objects(
        management_cluster, [o for o in rendered.objects if o["kind"] in RBAC_KINDS], dry_run=False
    )
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    kubeconfig = tmp_path / "chart-sa.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            _service_account_kubeconfig(
                management_cluster, namespace=world.namespace, account=account
            )
        )
    )
    port = free_port()
    log_path = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "POD_NAME": f"e2e-crossfade-{uuid.uuid4().hex[:5]}",  # the Downward API's job
        "CROSSFADE_AWS_ENDPOINT_URL": world.moto_url,
        "CROSSFADE_GKE_ENDPOINT": world.gke.endpoint,
    }
    process = _start(_operator_command(world, port=port, mode=mode), env=env, log_path=log_path)

    def about_this_test(line: str) -> bool:
        # Cluster-wide, the operator also sees pools other tests left in the shared
        # management cluster; the chart grants Secrets only in its own namespace, so
        # refusals about those pools are expected and not this test's concern.
        try:
            pool = json.loads(line).get("pool")
        except ValueError:
            return True
        return pool is None or str(pool).startswith(f"{world.namespace}/")

    def refusals() -> list[str]:
        lines = log_path.read_text(errors="replace").splitlines()
        return [
            line for line in lines if any(r in line for r in REFUSALS) and about_this_test(line)
        ]

    try:

        def leading() -> bool:
            assert process.poll() is None, log_path.read_text()[-4000:]
            try:
                url = f"http://127.0.0.1:{port}/readyz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    return b'"leader": true' in response.read()
            except OSError:
                return False

        await eventually(leading, timeout_s=60, what="the operator holds the Lease")
        await eventually(
            lambda: world.route_weights() == {"aws": 100, "gke": 0},
            timeout_s=SHIFT_TIMEOUT_S,
            what="steady state on aws",
        )
        world.aws_server.set_behaviour(Behaviour.ERROR_5XX, status=503)
        try:
            await eventually(
                lambda: world.route_weights() == {"aws": 0, "gke": 100},
                timeout_s=SHIFT_TIMEOUT_S,
                what="all traffic on gke",
            )
        except AssertionError as stuck:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise AssertionError(
                f"{stuck}\nrefusals: {refusals()[:10]}\nlog tail:\n{tail}"
            ) from None
        pool = world.pool()
        assert pool["status"]["activePlacement"] == "gke"
        assert "crossfade.dev/finalizer" in pool["metadata"]["finalizers"]
        assert world.events(), "the operator posted Events"
        with management_cluster.api_client() as api:
            lease = client.CoordinationV1Api(api).read_namespaced_lease(
                "crossfade-leader", world.namespace
            )
        assert lease.spec is not None and lease.spec.holder_identity == env["POD_NAME"]
        print(f"\n[packaging] operator peak RSS {_peak_rss_mib(process.pid)} MiB (one pool)")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert refusals() == [], "\n".join(refusals()[:5])
