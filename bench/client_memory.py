"""Memory of the operator's cloud clients: GKE client per process vs per placement, lazy Route53.

Each measurement runs in a fresh Python process, so nothing an earlier one loaded is reused.

GKE (``providers/gke.py``): build ``BENCH_CLIENT_COUNT`` (default 200) GKE placements and have
each describe its node pool once against ``crossfade.testing.gke_server`` (REST over loopback,
so every client really makes its session and wraps its methods). VmRSS and tracemalloc's
traced bytes are read after a warm-up placement and after the last one; per placement is
(after - before) / count.

- ``gke_shared``: the operator's code, ``gke.build`` (the registry factory): every placement
  uses the process's ``ClusterManagerClient`` (``gke.shared_client``);
- ``gke_client_per_placement``: what the operator did before, a ``make_client`` each.

Start-up (``handlers/process.py``): VmRSS after importing the ``crossfade run`` modules (as
``cli._cmd_run`` does, without the sync kubernetes client) and
building the routers' clients, with the Route53 client built when a router first asks
(``route53_lazy``, the operator's code) or at start-up (``route53_eager``, before); each
with and without boto3 already imported (it is, once a pool has an EKS placement).

TLS connections (``handlers/process.py`` API_CONNECTIONS, ``handlers/settings.py``): an
aiohttp session (as kubernetes_asyncio and kopf use) opens ``BENCH_TLS_CONNECTIONS``
(default 200) concurrent HTTPS requests to a local aiohttp TLS server in another process
(self-signed certificate made with ``cryptography``) and keeps them alive; VmRSS per kept
connection, for small (1 KB) and large (200 KB) responses.

Output: ``bench/results/client_memory.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

COUNT = int(os.environ.get("BENCH_CLIENT_COUNT", "200"))
TLS_CONNECTIONS = int(os.environ.get("BENCH_TLS_CONNECTIONS", "200"))
TLS_BODIES = (1_000, 200_000)
RESULTS = ROOT / "bench" / "results"
GKE_MODES = ("gke_shared", "gke_client_per_placement")
STARTUP_MODES = ("route53_lazy", "route53_eager", "route53_lazy_boto3", "route53_eager_boto3")
TLS_MODES = tuple(f"tls_{body}" for body in TLS_BODIES)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def placement(index: int) -> dict[str, Any]:
    member = {
        "project": "bench",
        "location": "us-central1",
        "cluster": "serving",
        "nodePool": f"pool-{index}",
    }
    return {"name": f"gcp-{index}", "provider": {"type": "GKENodePool", "gkeNodePool": member}}


def measure_gke(mode: str) -> dict[str, Any]:
    import asyncio

    from google.auth.credentials import AnonymousCredentials

    from crossfade.providers import gke
    from crossfade.providers.registry import ProviderContext
    from crossfade.testing.gke_server import GKEServer, GKEState

    state = GKEState()
    for index in range(COUNT + 1):
        state.add_pool(
            f"projects/bench/locations/us-central1/clusters/serving/nodePools/pool-{index}"
        )
    context = ProviderContext(gke_endpoint="", gke_credentials=AnonymousCredentials())

    def build(index: int) -> Any:
        if mode == "gke_shared":
            return gke.build(placement(index), context)
        ref = gke.GKENodePoolRef("bench", "us-central1", "serving", f"pool-{index}")
        client = gke.make_client(endpoint=context.gke_endpoint, credentials=context.gke_credentials)
        return gke.GKENodePoolProvider(ref=ref, client=client)

    async def run() -> dict[str, Any]:
        warm = build(0)
        await warm.describe()
        tracemalloc.start()
        rss_before, (traced_before, _) = rss_mib(), tracemalloc.get_traced_memory()
        providers = []
        for index in range(1, COUNT + 1):
            provider = build(index)
            await provider.describe()
            providers.append(provider)
        rss_after, (traced_after, _) = rss_mib(), tracemalloc.get_traced_memory()
        return {
            "mode": mode,
            "placements": COUNT,
            "rss_kib_per_placement": (rss_after - rss_before) * 1024 / COUNT,
            "traced_kib_per_placement": (traced_after - traced_before) / 1024 / COUNT,
            "distinct_clients": len({id(p._client) for p in providers}),
        }

    with GKEServer(state) as server:
        context = ProviderContext(
            gke_endpoint=server.endpoint, gke_credentials=AnonymousCredentials()
        )
        return asyncio.run(run())


def measure_startup(mode: str) -> dict[str, Any]:
    before = rss_mib()
    from crossfade.cli import keep_sync_kubernetes_client_out

    keep_sync_kubernetes_client_out()  # as `crossfade run` does before its imports
    if mode.endswith("_boto3"):
        import boto3  # noqa: F401 (what an EKS placement has loaded already)
    from crossfade.handlers.process import router_clients
    from crossfade.providers.registry import ProviderContext

    clients = router_clients(ProviderContext.from_environment({}))
    if mode.startswith("route53_eager"):
        clients["route53"]  # built at start-up, as before
    return {
        "mode": mode,
        "rss_mib": rss_mib(),
        "rss_mib_from_interpreter": rss_mib() - before,
        "boto3_loaded": "boto3" in sys.modules,
    }


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files in ``directory``."""
    from crossfade.testing.self_signed import write_self_signed

    return write_self_signed(directory, cert_name="cert.pem", key_name="key.pem")


def tls_server(cert: str, key: str, body: int) -> None:
    """Serve ``body`` bytes over HTTPS on a free port (printed) until stdin closes."""
    import asyncio
    import ssl

    from aiohttp import web

    async def serve() -> None:
        app = web.Application()

        async def answer(_request: web.Request) -> web.Response:
            return web.Response(body=b"x" * body)

        app.router.add_get("/", answer)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        runner = web.AppRunner(app, keepalive_timeout=600)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.to_thread(sys.stdin.read)
        await runner.cleanup()

    asyncio.run(serve())


def measure_tls(mode: str) -> dict[str, Any]:
    import asyncio
    import ssl
    import tempfile

    import aiohttp

    body = int(mode.removeprefix("tls_"))
    with tempfile.TemporaryDirectory() as directory:
        cert, key = self_signed(Path(directory))
        server = subprocess.Popen(
            [sys.executable, __file__, "--tls-server", str(cert), str(key), str(body)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())

            async def run() -> float:
                context = ssl.create_default_context(cafile=str(cert))
                connector = aiohttp.TCPConnector(limit=0, ssl=context, keepalive_timeout=600)
                async with aiohttp.ClientSession(connector=connector) as session:

                    async def one() -> None:
                        async with session.get(f"https://127.0.0.1:{port}/") as response:
                            await response.read()

                    await one()
                    await one()
                    before = rss_mib()
                    await asyncio.gather(*(one() for _ in range(TLS_CONNECTIONS)))
                    await asyncio.sleep(0.5)
                    return (rss_mib() - before) * 1024 / TLS_CONNECTIONS

            per_connection = asyncio.run(run())
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)
    return {
        "mode": mode,
        "connections": TLS_CONNECTIONS,
        "response_bytes": body,
        "rss_kib_per_connection": per_connection,
    }


def child(mode: str) -> None:
    if mode in GKE_MODES:
        result = measure_gke(mode)
    elif mode in TLS_MODES:
        result = measure_tls(mode)
    else:
        result = measure_startup(mode)
    print(json.dumps(result))


def run_child(mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def markdown(runs: list[dict[str, Any]], commit: str) -> str:
    gke_rows = [r for r in runs if r["mode"] in GKE_MODES]
    startup_rows = [r for r in runs if r["mode"] in STARTUP_MODES]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Client memory: GKE client per process, Route53 client on first use",
        "",
        f"`bench/client_memory.py` at {commit}, {when}; each row a fresh process (method in"
        " the script's docstring). The machine was shared (2 cores, other benchmarks and test"
        " suites running), which moves RSS by a few MiB between runs; traced bytes do not"
        " depend on load.",
        "",
        "Changes measured: 7de50b8 (one GKE ClusterManagerClient per process; before, one per"
        " GKE placement, so one per pool in the bench fleet) and dc71033 (the Route53 client"
        " is built by the first Route53 router; before, at start-up). The `*_per_placement`"
        " and `*_eager` rows reproduce the code before those commits. The TLS table prices"
        " the connections ee10725 caps (32 per ApiClient, 16 kopf Event workers).",
        "",
        f"## GKE placements ({COUNT}, one describe each against the local GKE REST server)",
        "",
        "| mode | distinct clients | RSS KiB / placement | traced KiB / placement |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {r['distinct_clients']} | {r['rss_kib_per_placement']:.1f} |"
        f" {r['traced_kib_per_placement']:.1f} |"
        for r in gke_rows
    ]
    lines += [
        "",
        "## Start-up: `crossfade run` modules plus the routers' clients",
        "",
        "| mode | boto3 loaded | RSS MiB |",
        "|---|---|---|",
    ]
    lines += [f"| {r['mode']} | {r['boto3_loaded']} | {r['rss_mib']:.1f} |" for r in startup_rows]
    lines += [
        "",
        f"## Kept-alive TLS connections of one aiohttp session ({TLS_CONNECTIONS} at once)",
        "",
        "| response bytes | RSS KiB / connection |",
        "|---|---|",
    ]
    lines += [
        f"| {r['response_bytes']} | {r['rss_kib_per_connection']:.0f} |"
        for r in runs
        if r["mode"] in TLS_MODES
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--tls-server":
        tls_server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    runs = [run_child(mode) for mode in (*GKE_MODES, *STARTUP_MODES, *TLS_MODES)]
    for run in runs:
        print(json.dumps(run))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "client_memory.json").write_text(
        json.dumps({"commit": commit, "placements": COUNT, "runs": runs}, indent=1) + "\n"
    )
    (RESULTS / "client_memory.md").write_text(markdown(runs, commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
