"""What the loopback test servers share: a threaded HTTP server on 127.0.0.1, plain replies,
and the forwarding step of the fault proxies (``aws_faults``, ``kube_fault_proxy``)."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterable
from typing import Self

SHUTDOWN_POLL_INTERVAL_S = 0.05
# Hop-by-hop headers (and the length, which the proxy sets itself) never pass a proxy as is.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})

Reply = tuple[int, list[tuple[str, str]], bytes]


class LoopbackServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) served from a daemon thread.

    The test servers and proxies are subclasses: ``url``, ``start()`` and ``stop()`` are theirs.
    """

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], *, name: str) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_INTERVAL_S},
            name=name,
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def end_to_end_headers(
    headers: Iterable[tuple[str, str]], *, hop: frozenset[str] = HOP_HEADERS
) -> list[tuple[str, str]]:
    """Return ``headers`` without the ones named (lower case) in ``hop``."""
    return [(key, value) for key, value in headers if key.lower() not in hop]


def exchange(
    connection: http.client.HTTPConnection,
    *,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    hop: frozenset[str] = HOP_HEADERS,
) -> Reply:
    """Send one request upstream on ``connection`` (then closed); return its whole reply."""
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, end_to_end_headers(response.getheaders(), hop=hop), payload
    finally:
        connection.close()


def send_reply(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: Iterable[tuple[str, str]],
    payload: bytes,
) -> None:
    """Answer the handler's request with ``payload`` and its Content-Length."""
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
