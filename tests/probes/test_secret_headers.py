"""Probe headers come from a real Secret and never show up in reprs or error messages."""

from __future__ import annotations

import base64

import pytest
from kubernetes_asyncio import client

from crossfade.probes.secret_headers import (
    SecretHeaders,
    SecretHeadersError,
    load_secret_headers,
)
from crossfade.testing.controlplane import TestCluster

KEY = "sk-live-secret-value-42"


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


async def test_headers_load_from_a_secret(management_cluster: TestCluster, namespace: str) -> None:
    api = await management_cluster.async_api_client()
    async with api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="probe-headers"),
                data={"Authorization": b64(f"Bearer {KEY}\n"), "X-Team": b64("serving")},
            ),
        )
        headers = await load_secret_headers(api, namespace=namespace, name="probe-headers")
        assert dict(headers) == {"Authorization": f"Bearer {KEY}", "X-Team": "serving"}
        assert KEY not in repr(headers) and KEY not in str(headers)
        assert "Authorization" in repr(headers)

        with pytest.raises(SecretHeadersError) as missing:
            await load_secret_headers(api, namespace=namespace, name="absent")
        assert "404" in str(missing.value)

        await core.create_namespaced_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="bad-headers"),
                data={"Authorization": b64(b"\xff\xfe" + KEY.encode())},
            ),
        )
        with pytest.raises(SecretHeadersError) as bad:
            await load_secret_headers(api, namespace=namespace, name="bad-headers")
        assert KEY not in str(bad.value)


def test_header_values_spanning_lines_would_allow_injection() -> None:
    headers = SecretHeaders({"Authorization": "Bearer abc"})
    assert headers.scrub("got Bearer abc back") == "got <redacted> back"
    assert headers == SecretHeaders({"Authorization": "Bearer abc"})
    assert hash(headers) == hash(SecretHeaders({"Authorization": "Bearer abc"}))
