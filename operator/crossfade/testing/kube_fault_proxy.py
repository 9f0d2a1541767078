"""A loopback HTTP proxy in front of a real kube-apiserver that can answer 429 like the server does.

A real apiserver throttles through API Priority and Fairness and while a resource's storage
(re)initialises; neither can be switched on at will in a test, and the admin identity is
exempt from APF. The proxy forwards every request to the apiserver with the admin identity
and, when told to, answers the next requests with the exact Status body and ``Retry-After``
header the apiserver sends when it throttles. Clients point a kubeconfig at ``proxy.url``.
"""

from __future__ import annotations

import http.client
import http.server
import json
import ssl
import threading
import urllib.parse
from typing import Any

THROTTLE_MESSAGE = "Too many requests, please try again later."
SHUTDOWN_POLL_INTERVAL_S = 0.05
UPSTREAM_TIMEOUT_S = 30.0
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
)


def throttled_body(retry_after_s: int) -> bytes:
    """Return the Status the apiserver sends with a 429."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": THROTTLE_MESSAGE,
            "reason": "TooManyRequests",
            "details": {"retryAfterSeconds": retry_after_s},
            "code": 429,
        }
    ).encode()


class KubeFaultProxy:
    """Forward plain HTTP on 127.0.0.1 to an apiserver over TLS; inject 429s on demand."""

    def __init__(self, *, upstream: str, ssl_context: ssl.SSLContext) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._throttles_left = 0
        self._retry_after_s = 1
        self.throttled = 0
        self.forwarded = 0
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_INTERVAL_S},
            name="kube-fault-proxy",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self) -> dict[str, Any]:
        """Return a kubeconfig pointing at the proxy (it adds the admin identity upstream)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }

    def start(self) -> KubeFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def throttle_next(self, times: int = 1, *, retry_after_s: int = 1) -> None:
        """Answer the next ``times`` requests with 429 TooManyRequests."""
        with self._lock:
            self._throttles_left += times
            self._retry_after_s = retry_after_s

    def _take_throttle(self) -> int | None:
        with self._lock:
            if self._throttles_left <= 0:
                self.forwarded += 1
                return None
            self._throttles_left -= 1
            self.throttled += 1
            return self._retry_after_s

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=UPSTREAM_TIMEOUT_S
        )
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS]
            return response.status, kept, payload
        finally:
            connection.close()

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                retry_after_s = proxy._take_throttle()
                if retry_after_s is not None:
                    self._send(
                        429,
                        [("Content-Type", "application/json"), ("Retry-After", str(retry_after_s))],
                        throttled_body(retry_after_s),
                    )
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                try:
                    status, reply_headers, payload = proxy._forward(
                        self.command, self.path, headers, body
                    )
                except OSError as error:
                    self._send(502, [("Content-Type", "text/plain")], str(error).encode())
                    return
                self._send(status, reply_headers, payload)

            def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        return Handler
