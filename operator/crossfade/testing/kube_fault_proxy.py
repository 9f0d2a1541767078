"""A loopback HTTP proxy in front of a real kube-apiserver that injects API faults on demand.

A real apiserver throttles through API Priority and Fairness and while a resource's storage
(re)initialises; neither can be switched on at will in a test, and the admin identity is
exempt from APF. The proxy forwards every request to the apiserver with the admin identity
and, when told to, answers the next requests with the exact Status body and ``Retry-After``
header the apiserver sends when it throttles. Clients point a kubeconfig at ``proxy.url``.

Watch requests (``watch=true``) are streamed through chunk by chunk and recorded. A watch
stall (``stall_watches``) is what a half-dead load balancer or a wedged apiserver does: the
open watch connections stay open but carry nothing more, not even the apiserver's own end
of the stream, until the client gives up on them. Watches opened afterwards work normally.
"""

from __future__ import annotations

import http.client
import http.server
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from crossfade.testing.loopback import (
    HOP_HEADERS,
    LoopbackServer,
    Reply,
    end_to_end_headers,
    exchange,
    send_reply,
)

THROTTLE_MESSAGE = "Too many requests, please try again later."
UPSTREAM_TIMEOUT_S = 30.0
STREAM_READ_BYTES = 64 * 1024
# How often a held (stalled) watch connection checks whether its client has gone.
HOLD_POLL_INTERVAL_S = 0.2
# The apiserver's own Host, not the proxy's, goes upstream.
_HOP_HEADERS = HOP_HEADERS | {"host"}


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


def is_watch(path: str) -> bool:
    """True for a streaming watch request (``?watch=true`` or ``?watch=1``)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    return any(value.lower() in {"true", "1"} for value in query.get("watch", ()))


@dataclass
class WatchStream:
    """One watch request passing through the proxy."""

    path: str
    started_at: float
    upstream: http.client.HTTPSConnection | None = None
    stalled: bool = False
    closed: bool = False
    events_forwarded: int = field(default=0)

    def resource(self) -> str:
        """The watched collection's path, without the query."""
        return urllib.parse.urlsplit(self.path).path


class KubeFaultProxy(LoopbackServer):
    """Forward plain HTTP on 127.0.0.1 to an apiserver over TLS; inject faults on demand."""

    def __init__(self, *, upstream: str, ssl_context: ssl.SSLContext) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 443
        self._ssl = ssl_context
        self._lock = threading.Lock()
        self._throttles_left = 0
        self._retry_after_s = 1
        self.throttled = 0
        self.forwarded = 0
        self.watches: list[WatchStream] = []
        # (monotonic time, method, path, body) of every request that is not a watch.
        self.requests: list[tuple[float, str, str, bytes]] = []
        self._stopping = threading.Event()
        super().__init__(self._handler_class(), name="kube-fault-proxy")

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

    def stop(self) -> None:
        """Release the held (stalled) watches, then stop serving."""
        self._stopping.set()
        super().stop()

    def throttle_next(self, times: int = 1, *, retry_after_s: int = 1) -> None:
        """Answer the next ``times`` requests with 429 TooManyRequests."""
        with self._lock:
            self._throttles_left += times
            self._retry_after_s = retry_after_s

    def stall_watches(self) -> int:
        """Silence every open watch: held open, nothing forwarded; return how many."""
        with self._lock:
            open_streams = [w for w in self.watches if not w.closed and not w.stalled]
            for stream in open_streams:
                stream.stalled = True
        for stream in open_streams:
            _cut(stream.upstream)
        return len(open_streams)

    def watches_of(self, resource_suffix: str) -> list[WatchStream]:
        """Watch requests so far whose collection path ends with ``resource_suffix``."""
        with self._lock:
            return [w for w in self.watches if w.resource().endswith(resource_suffix)]

    def _take_throttle(self) -> int | None:
        with self._lock:
            if self._throttles_left <= 0:
                self.forwarded += 1
                return None
            self._throttles_left -= 1
            self.throttled += 1
            return self._retry_after_s

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        connection = http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=UPSTREAM_TIMEOUT_S
        )
        return exchange(
            connection, method=method, path=path, headers=headers, body=body, hop=_HOP_HEADERS
        )

    def _stream_watch(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        """Relay a watch response chunk by chunk; hold the client silently once stalled."""
        stream = WatchStream(path=handler.path, started_at=time.monotonic())
        with self._lock:
            self.forwarded += 1
            self.watches.append(stream)
        headers = dict(end_to_end_headers(handler.headers.items(), hop=_HOP_HEADERS))
        # No read timeout: a watch is quiet for as long as nothing changes.
        upstream = http.client.HTTPSConnection(self._host, self._port, context=self._ssl)
        stream.upstream = upstream
        try:
            try:
                upstream.request(handler.command, handler.path, body=body or None, headers=headers)
                response = upstream.getresponse()
            except OSError as error:
                if not stream.stalled:
                    send_reply(handler, 502, [("Content-Type", "text/plain")], str(error).encode())
                    return
                response = None
            handler.send_response(response.status if response is not None else 200)
            if response is not None:
                for key, value in end_to_end_headers(response.getheaders(), hop=_HOP_HEADERS):
                    handler.send_header(key, value)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.flush()
            while response is not None and not stream.stalled:
                try:
                    chunk = response.read1(STREAM_READ_BYTES)
                except (OSError, http.client.HTTPException):
                    chunk = b""
                if not chunk or stream.stalled:
                    break
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
                stream.events_forwarded += chunk.count(b"\n")
            if stream.stalled:
                self._hold(handler)
                handler.close_connection = True
                return
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True  # the client went away mid-stream
        finally:
            stream.closed = True
            upstream.close()

    def _hold(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        """Keep a stalled watch connection open and silent until its client closes it."""
        connection: socket.socket = handler.connection
        while not self._stopping.is_set():
            readable, _, _ = select.select([connection], [], [], HOLD_POLL_INTERVAL_S)
            if readable:
                try:
                    if not connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                # The client sent something on a connection it is still waiting on: drop it.
                connection.recv(STREAM_READ_BYTES)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if is_watch(self.path):
                    proxy._stream_watch(self, body)
                    return
                with proxy._lock:
                    proxy.requests.append((time.monotonic(), self.command, self.path, body))
                retry_after_s = proxy._take_throttle()
                if retry_after_s is not None:
                    self._send(
                        429,
                        [("Content-Type", "application/json"), ("Retry-After", str(retry_after_s))],
                        throttled_body(retry_after_s),
                    )
                    return
                headers = dict(end_to_end_headers(self.headers.items(), hop=_HOP_HEADERS))
                try:
                    status, reply_headers, payload = proxy._forward(
                        self.command, self.path, headers, body
                    )
                except OSError as error:
                    self._send(502, [("Content-Type", "text/plain")], str(error).encode())
                    return
                self._send(status, reply_headers, payload)

            def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                send_reply(self, status, headers, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        return Handler


def _cut(connection: http.client.HTTPSConnection | None) -> None:
    """Shut an upstream connection down from another thread (wakes its blocked reader)."""
    sock = connection.sock if connection is not None else None
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return
