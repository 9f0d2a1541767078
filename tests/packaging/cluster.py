"""Helpers for the packaging tests that talk to the real kube-apiserver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from crossfade.testing.controlplane import TestCluster
from tests.packaging.chart import CHART_DIR

FIELD_MANAGER = "helm-packaging-test"
CRD_SERVED_TIMEOUT_S = 30.0

# prometheus-operator's CRD is not among the pinned upstream sets. This stand-in declares the
# ServiceMonitor fields the chart writes, with their upstream types, and nothing else, so a
# strict server-side apply still rejects a misspelt or misplaced field.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "listKind": "List"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["selector"],
                                "properties": {
                                    "selector": {
                                        "type": "object",
                                        "properties": {
                                            "matchLabels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            }
                                        },
                                    },
                                    "namespaceSelector": {
                                        "type": "object",
                                        "properties": {
                                            "matchNames": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            }
                                        },
                                    },
                                    "endpoints": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "port": {"type": "string"},
                                                "path": {"type": "string"},
                                                "interval": {
                                                    "type": "string",
                                                    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?"
                                                    "(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                                    "(([0-9]+)s)?(([0-9]+)ms)?)$",
                                                },
                                                "scrapeTimeout": {
                                                    "type": "string",
                                                    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?"
                                                    "(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                                    "(([0-9]+)s)?(([0-9]+)ms)?)$",
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def install_chart_crds(cluster: TestCluster, workdir: Path) -> list[str]:
    """Install what helm installs before the templates (crds/), plus the ServiceMonitor stand-in."""
    stand_in = workdir / "servicemonitor-crd.json"
    stand_in.write_text(json.dumps(SERVICE_MONITOR_CRD))
    names = cluster.install_crds([*sorted((CHART_DIR / "crds").glob("*.yaml")), stand_in])
    wait_until_served(cluster, names)
    return names


def wait_until_served(cluster: TestCluster, crd_names: Iterable[str]) -> None:
    """Wait until each CRD's list answers (a fresh CRD's storage first answers 429)."""
    with cluster.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        custom = client.CustomObjectsApi(api)
        for crd_name in crd_names:
            crd = ext.read_custom_resource_definition(crd_name)
            group, plural = crd.spec.group, crd.spec.names.plural
            version = next(v.name for v in crd.spec.versions if v.served)
            deadline = time.monotonic() + CRD_SERVED_TIMEOUT_S
            while True:
                try:
                    custom.list_cluster_custom_object(group, version, plural, limit=1)
                    break
                except ApiException as exc:
                    if exc.status not in (404, 429, 503) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


def ensure_namespaces(cluster: TestCluster, names: Iterable[str]) -> None:
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for name in names:
            try:
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            except ApiException as exc:
                if exc.status != 409:
                    raise


def apply_objects(
    cluster: TestCluster,
    objects: Iterable[Mapping[str, Any]],
    *,
    dry_run: bool,
) -> list[dict[str, Any]]:
    """Server-side apply each object with strict field validation; return what came back."""
    results = []
    with cluster.api_client() as api:
        dyn = dynamic.DynamicClient(api)
        for obj in objects:
            resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            namespace = obj["metadata"].get("namespace") if resource.namespaced else None
            query = [("fieldValidation", "Strict")]
            result = resource.server_side_apply(
                body=dict(obj),
                namespace=namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
                query_params=query,
            )
            results.append(result.to_dict())
    return results


def service_account_token(
    cluster: TestCluster, *, namespace: str, account: str, lifetime_s: int
) -> str:
    """Return a real bound token for a ServiceAccount (TokenRequest), as a pod would get."""
    with cluster.api_client() as api:
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(
            account,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=lifetime_s)
            ),
        )
    assert answer.status is not None
    return str(answer.status.token)
