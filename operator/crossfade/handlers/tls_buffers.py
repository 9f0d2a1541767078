"""Smaller asyncio TLS read buffers: the operator holds hundreds of TLS connections.

asyncio's ``SSLProtocol`` gives every TLS connection a zero-filled read buffer of
``SSLProtocol.max_size`` bytes (256 KiB in CPython 3.11-3.13, python/cpython#109534), for
the life of the connection. The operator keeps one connection per concurrent request to
each apiserver (kopf's session has no connection limit, kubernetes_asyncio's allows 100),
so at a few hundred pools those buffers alone were ~60 MiB of RSS (bench/results/memory.md).
A TLS record carries at most 16 KiB of plaintext, so a 64 KiB buffer still takes several
records per read; larger responses are simply read in more passes.
"""

from __future__ import annotations

import logging
from asyncio import sslproto

log = logging.getLogger(__name__)

TLS_READ_BUFFER_BYTES = 64 * 1024


def shrink_tls_read_buffers(size: int = TLS_READ_BUFFER_BYTES) -> int:
    """Make TLS connections opened from now on use ``size``-byte read buffers.

    Never grows the buffer: returns the size in force afterwards. Call before the first
    connection is opened (existing connections keep the buffer they have).
    """
    current = int(sslproto.SSLProtocol.max_size)
    if size < current:
        sslproto.SSLProtocol.max_size = size
        log.debug("asyncio TLS read buffer %d -> %d bytes", current, size)
    return int(sslproto.SSLProtocol.max_size)
