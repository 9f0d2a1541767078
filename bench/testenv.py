"""Test control plane cost: start-up time and peak memory of one etcd + kube-apiserver.

Starts the real control plane three times; each time one cluster, installs the project's
CRDs plus Gateway API, then writes 200 ConfigMaps, and reads the processes' peak RSS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import spread, write_results
from crossfade.testing.controlplane import REPO_ROOT, ControlPlane, upstream_crds

RUNS = 3
OBJECTS = 200


def one_run() -> dict[str, float]:
    from kubernetes import client

    started = time.monotonic()
    plane = ControlPlane.create()
    try:
        cluster = plane.start_cluster("bench")
        ready_s = time.monotonic() - started
        cluster.install_crds(
            sorted((REPO_ROOT / "crds").glob("*.yaml")) + upstream_crds("gateway-api")
        )
        write_started = time.monotonic()
        with cluster.api_client() as api:
            core = client.CoreV1Api(api)
            for index in range(OBJECTS):
                core.create_namespaced_config_map(
                    "default",
                    client.V1ConfigMap(
                        metadata=client.V1ObjectMeta(name=f"cm-{index}"), data={"k": "v" * 512}
                    ),
                )
        writes_per_s = OBJECTS / (time.monotonic() - write_started)
        assert plane.etcd is not None
        apiserver_kib = cluster.peak_rss_kib() or 0
        etcd_kib = (plane.etcd.process.peak_rss_kib() if plane.etcd.process else None) or 0
    finally:
        plane.stop()
    return {
        "ready_s": ready_s,
        "writes_per_s": writes_per_s,
        "apiserver_peak_mib": apiserver_kib / 1024,
        "etcd_peak_mib": etcd_kib / 1024,
        "cluster_peak_mib": (apiserver_kib + etcd_kib) / 1024,
    }


def main() -> int:
    runs = [one_run() for _ in range(RUNS)]
    rows = []
    for metric in runs[0]:
        stats = spread([run[metric] for run in runs])
        rows.append({"metric": metric, **{k: v for k, v in stats.items() if k != "mean"}})
    md = write_results("testenv", rows=rows, extra={"runs": runs, "objects_written": OBJECTS})
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
