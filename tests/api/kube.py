"""Minimal raw HTTP access to a test apiserver: dry-run creates, status patches, Table reads."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from crossfade.api import GROUP, PLURAL, VERSION
from crossfade.testing.controlplane import TestCluster

TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io"
REQUEST_TIMEOUT_S = 30


@dataclass(frozen=True)
class Reply:
    """Status code and decoded JSON body of one request."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class PoolClient:
    """InferencePool requests against one cluster, namespaced."""

    def __init__(self, cluster: TestCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self._context = cluster.ssl_context()

    def _url(self, suffix: str = "", *, query: str = "") -> str:
        base = f"{self.cluster.server}/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{base}{suffix}{'?' + query if query else ''}"

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(
                request, timeout=REQUEST_TIMEOUT_S, context=self._context
            ) as response:
                return Reply(response.status, json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as error:
            return Reply(error.code, json.loads(error.read() or b"{}"))

    def dry_run_create(self, body: dict[str, Any]) -> Reply:
        """Create with dryRun=All and fieldValidation=Strict: validated, never stored."""
        return self.request("POST", self._url(query="dryRun=All&fieldValidation=Strict"), body=body)

    def create(self, body: dict[str, Any]) -> Reply:
        return self.request("POST", self._url(query="fieldValidation=Strict"), body=body)

    def merge_patch(self, name: str, patch: dict[str, Any], *, subresource: str = "") -> Reply:
        suffix = f"/{name}/{subresource}" if subresource else f"/{name}"
        return self.request(
            "PATCH",
            self._url(suffix, query="fieldValidation=Strict"),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def get(self, name: str) -> Reply:
        return self.request("GET", self._url(f"/{name}"))

    def table(self) -> Reply:
        return self.request("GET", self._url(), accept=TABLE_ACCEPT)


def create_namespace(cluster: TestCluster, name: str) -> None:
    """Create a namespace (idempotent)."""
    client = PoolClient(cluster, name)
    reply = client.request(
        "POST",
        f"{cluster.server}/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    assert reply.ok or reply.status == 409, reply.body
