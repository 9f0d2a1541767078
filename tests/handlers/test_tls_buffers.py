"""TLS connections opened after ``shrink_tls_read_buffers`` use the smaller read buffer.

The apiserver test checks that nothing is lost reading a multi-megabyte response (the
apiserver's OpenAPI document) through 64 KiB buffers over real TLS.
"""

from __future__ import annotations

import json
from asyncio import sslproto
from typing import Any

import pytest

from crossfade.handlers.tls_buffers import TLS_READ_BUFFER_BYTES, shrink_tls_read_buffers
from crossfade.testing.controlplane import TestCluster


@pytest.fixture
def restored_buffer_size(monkeypatch: pytest.MonkeyPatch) -> int:
    """The size before the test; put back afterwards (the setting is process-wide)."""
    original = int(sslproto.SSLProtocol.max_size)
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", original)
    return original


def test_new_tls_connections_get_the_smaller_buffer(restored_buffer_size: int) -> None:
    assert restored_buffer_size > TLS_READ_BUFFER_BYTES  # CPython's 256 KiB
    assert shrink_tls_read_buffers() == TLS_READ_BUFFER_BYTES
    # SSLProtocol.__init__ allocates bytearray(self.max_size) for each connection.
    assert sslproto.SSLProtocol.max_size == TLS_READ_BUFFER_BYTES


def test_the_buffer_is_never_grown(restored_buffer_size: int) -> None:
    shrink_tls_read_buffers()
    assert shrink_tls_read_buffers(4 * restored_buffer_size) == TLS_READ_BUFFER_BYTES


async def openapi_document(cluster: TestCluster) -> bytes:
    """The apiserver's OpenAPI v2 document (megabytes), read on a new TLS connection."""
    api = await cluster.async_api_client()
    async with api:
        answer: Any = await api.call_api(
            "/openapi/v2", "GET", _preload_content=False, auth_settings=["BearerToken"]
        )
        response = answer[0] if isinstance(answer, tuple) else answer
        body: bytes = await response.read()
        return body


async def test_a_large_response_reads_whole_through_small_buffers(
    restored_buffer_size: int, management_cluster: TestCluster
) -> None:
    before = await openapi_document(management_cluster)
    shrink_tls_read_buffers()
    after = await openapi_document(management_cluster)
    assert len(before) > 4 * TLS_READ_BUFFER_BYTES
    assert json.loads(after) == json.loads(before)
