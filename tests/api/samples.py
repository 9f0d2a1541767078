"""Valid InferencePool bodies the API tests mutate (plain dicts, wire form)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"


def example_files() -> list[Path]:
    """Every example pool manifest (scenarios are simulator input, not manifests)."""
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def example_documents(*, pools_only: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(file/Kind/name, body) for every document of every example file.

    Examples may carry the objects a pool points at (Services, an HTTPRoute) next to it.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for path in example_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or (pools_only and doc.get("kind") != "InferencePool"):
                continue
            out.append((f"{path.name}/{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


BASE_POOL: dict[str, Any] = {
    "apiVersion": "crossfade.dev/v1alpha1",
    "kind": "InferencePool",
    "metadata": {"name": "pool"},
    "spec": {
        "placements": [
            {
                "name": "aws",
                "priority": 100,
                "role": "Primary",
                "provider": {
                    "type": "EKSNodeGroup",
                    "eksNodeGroup": {"region": "us-east-1", "cluster": "c1", "nodegroup": "gpu"},
                },
                "nodes": {"min": 1, "max": 4},
                "backendRef": {"name": "svc-aws", "port": 8000},
                "endpoint": {"url": "http://127.0.0.1:18001"},
            },
            {
                "name": "gke",
                "priority": 50,
                "role": "Standby",
                "provider": {
                    "type": "GKENodePool",
                    "gkeNodePool": {
                        "project": "my-project",
                        "location": "europe-west4",
                        "cluster": "c2",
                        "nodePool": "gpu",
                    },
                },
                "nodes": {"min": 0, "max": 4},
                "backendRef": {"name": "svc-gke", "port": 8000},
                "endpoint": {"url": "http://127.0.0.1:18002"},
            },
        ],
        "traffic": {"gatewayAPI": {"httpRouteRef": {"name": "route"}}},
    },
}

ROUTE53: dict[str, Any] = {
    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
    "recordName": "llm.example.com",
    "type": "CNAME",
    "ttlSeconds": 60,
    "records": [
        {"placement": "aws", "values": ["aws.example.com"]},
        {"placement": "gke", "values": ["gke.example.com"]},
    ],
}


CAPI_TEMPLATED_PLACEMENT: dict[str, Any] = {
    "name": "capi",
    "priority": 50,
    "role": "Standby",
    "provider": {
        "type": "ClusterAPI",
        "clusterAPI": {
            "kubeconfigSecretRef": {"name": "fleet-kubeconfig"},
            "namespace": "fleet",
            # No machineDeployment: crossfade names the MachineDeployments it creates.
            "clusterName": "fleet",
            "version": "v1.33.1",
            "bootstrapConfigRef": {
                "apiGroup": "bootstrap.cluster.x-k8s.io",
                "kind": "KubeadmConfigTemplate",
                "name": "gpu-workers",
            },
            "infrastructureTemplates": [
                {
                    "apiGroup": "infrastructure.cluster.x-k8s.io",
                    "kind": "AWSMachineTemplate",
                    "name": "gpu-p5",
                },
                {
                    "apiGroup": "infrastructure.cluster.x-k8s.io",
                    "kind": "AWSMachineTemplate",
                    "name": "gpu-p4d",
                },
            ],
        },
    },
    "nodes": {"min": 0, "max": 4},
    "backendRef": {"name": "svc-capi", "port": 8000},
    "template": {"instanceTypes": ["p5.48xlarge", "p4d.24xlarge"]},
    "lifecycle": "OnDemand",
}


def base_pool(name: str = "pool") -> dict[str, Any]:
    """A fresh deep copy of the valid two-placement pool."""
    body = copy.deepcopy(BASE_POOL)
    body["metadata"]["name"] = name
    return body
