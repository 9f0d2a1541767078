"""The operator caps its connections to the management apiserver (each costs ~300 KiB of RSS).

Pool passes running at the same moment opened one TLS connection each and kept it alive, so
the operator's memory grew by about one connection per pool (bench/results/client_memory.md).
"""

from __future__ import annotations

import asyncio

import kopf
import pytest

from crossfade.handlers import settings as cf_settings
from crossfade.handlers.process import API_CONNECTIONS, make_api_client
from crossfade.testing.controlplane import TestCluster


async def test_the_operator_api_client_keeps_at_most_api_connections(
    management_cluster: TestCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kubernetes_asyncio reads $KUBECONFIG once, at import; point its default at the cluster.
    from kubernetes_asyncio.config import kube_config

    monkeypatch.setattr(
        kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(management_cluster.kubeconfig_path)
    )
    api = await make_api_client()
    try:
        connector = api.rest_client.pool_manager.connector
        assert connector.limit == API_CONNECTIONS
        # Twice as many concurrent reads as connections: all answered, on at most the cap.
        from kubernetes_asyncio import client

        core = client.CoreV1Api(api)
        answers = await asyncio.gather(
            *(core.list_namespace(limit=1) for _ in range(2 * API_CONNECTIONS))
        )
        assert len(answers) == 2 * API_CONNECTIONS
        kept = sum(len(conns) for conns in connector._conns.values())
        assert 0 < kept <= API_CONNECTIONS
    finally:
        await api.close()


def test_kopf_posts_events_from_a_bounded_number_of_workers() -> None:
    settings = kopf.OperatorSettings()
    assert settings.posting.worker_limit is None  # kopf's default: a worker per object
    cf_settings.configure(settings, component="crossfade", instance="test")
    assert settings.posting.worker_limit == cf_settings.EVENT_POSTING_WORKERS
