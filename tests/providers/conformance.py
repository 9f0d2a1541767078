"""Shared conformance suite every capacity provider passes, plus helpers for provider tests."""

from __future__ import annotations

import time

from kubernetes import client as sync_client
from kubernetes.client.rest import ApiException

from crossfade.testing.controlplane import TestCluster

STORAGE_READY_TIMEOUT_S = 30.0


def wait_until_served(cluster: TestCluster, *, group: str, version: str, plural: str) -> None:
    """Wait until a freshly installed CRD's storage answers lists (it says 429 until then)."""
    deadline = time.monotonic() + STORAGE_READY_TIMEOUT_S
    with cluster.api_client() as api:
        custom = sync_client.CustomObjectsApi(api)
        while True:
            try:
                custom.list_cluster_custom_object(group, version, plural, limit=1)
                return
            except ApiException as error:
                if error.status != 429 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
