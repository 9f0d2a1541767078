"""Fault-injecting HTTP proxy in front of a moto server: 5xx, throttling, latency, lost replies.

boto3 talks to the proxy (``endpoint_url=proxy.url``) exactly as it would to AWS; the proxy
forwards to moto unless a fault rule matches the request's AWS operation. Every request is
recorded (operation, method, path, body, status) so tests can check what went on the wire,
for example that a retried UpdateNodegroupConfig carried the same clientRequestToken.
"""

from __future__ import annotations

import http.client
import http.server
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from crossfade.testing.loopback import (
    LoopbackServer,
    Reply,
    end_to_end_headers,
    exchange,
    send_reply,
)

FaultKind = Literal["server_error", "throttle", "latency", "lost_reply", "rewrite_reply"]
WireProtocol = Literal["rest-json", "query", "rest-xml"]

# (method, path regex) -> (operation, wire protocol) for the calls crossfade makes.
_REST_OPERATIONS: tuple[tuple[str, re.Pattern[str], str, WireProtocol], ...] = (
    ("GET", re.compile(r"^/clusters/[^/]+/node-groups/[^/]+$"), "DescribeNodegroup", "rest-json"),
    (
        "POST",
        re.compile(r"^/clusters/[^/]+/node-groups/[^/]+/update-config$"),
        "UpdateNodegroupConfig",
        "rest-json",
    ),
    ("GET", re.compile(r"^/clusters/[^/]+/updates/[^/]+$"), "DescribeUpdate", "rest-json"),
    ("POST", re.compile(r"^/clusters/[^/]+/node-groups$"), "CreateNodegroup", "rest-json"),
    ("POST", re.compile(r"^/clusters$"), "CreateCluster", "rest-json"),
    (
        "POST",
        re.compile(r"^/2013-04-01/hostedzone/[^/]+/rrset/?$"),
        "ChangeResourceRecordSets",
        "rest-xml",
    ),
    (
        "GET",
        re.compile(r"^/2013-04-01/hostedzone/[^/]+/rrset/?$"),
        "ListResourceRecordSets",
        "rest-xml",
    ),
    ("GET", re.compile(r"^/2013-04-01/change/[^/]+$"), "GetChange", "rest-xml"),
    ("POST", re.compile(r"^/2013-04-01/healthcheck/?$"), "CreateHealthCheck", "rest-xml"),
    ("POST", re.compile(r"^/2013-04-01/hostedzone/?$"), "CreateHostedZone", "rest-xml"),
)


def operation_of(method: str, path: str, body: bytes) -> tuple[str, WireProtocol]:
    """Return the AWS operation name and wire protocol of one request."""
    bare_path = urllib.parse.urlsplit(path).path
    for rule_method, pattern, operation, protocol in _REST_OPERATIONS:
        if method == rule_method and pattern.match(bare_path):
            return operation, protocol
    if method == "POST" and body:
        fields = urllib.parse.parse_qs(body.decode(errors="replace"))
        if "Action" in fields:
            return fields["Action"][0], "query"
    return f"{method} {bare_path}", "rest-json"


@dataclass
class Fault:
    """One fault rule: applies to the next ``times`` requests of ``operation`` ("*": any)."""

    kind: FaultKind
    operation: str = "*"
    times: int = 1
    status: int = 500
    code: str = ""
    delay_s: float = 0.0
    # rewrite_reply: replace these bytes in moto's answer (for example INSYNC -> PENDING).
    replace: tuple[bytes, bytes] = (b"", b"")

    def matches(self, operation: str) -> bool:
        return self.times > 0 and self.operation in ("*", operation)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the proxy saw, and the status it answered with."""

    operation: str
    method: str
    path: str
    body: bytes
    status: int
    fault: FaultKind | None

    def json(self) -> dict[str, object]:
        """Return the body parsed as JSON (rest-json requests)."""
        parsed = json.loads(self.body or b"{}")
        if not isinstance(parsed, dict):
            raise ValueError("request body is not a JSON object")
        return parsed


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _error_body(protocol: WireProtocol, *, code: str, message: str) -> tuple[bytes, dict[str, str]]:
    if protocol == "rest-json":
        body = json.dumps({"__type": code, "message": message}).encode()
        return body, {"Content-Type": "application/json", "x-amzn-ErrorType": code}
    xml = (
        '<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>crossfade-fault</RequestId></ErrorResponse>"
    )
    return xml.encode(), {"Content-Type": "text/xml"}


THROTTLE_CODE_BY_PROTOCOL: dict[WireProtocol, str] = {
    "rest-json": "ThrottlingException",
    "query": "Throttling",
    "rest-xml": "Throttling",
}


class FaultProxy(LoopbackServer):
    """A threaded HTTP proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults."""

    def __init__(self, *, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream_host = parsed.hostname or "127.0.0.1"
        self._upstream_port = parsed.port or 80
        self._state = _State()
        super().__init__(self._handler_class(), name="aws-fault-proxy")

    def add(self, fault: Fault) -> Fault:
        """Add a fault rule (rules are tried in the order added)."""
        with self._state.lock:
            self._state.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every fault rule and the request record."""
        with self._state.lock:
            self._state.faults.clear()
            self._state.requests.clear()

    def requests(self, operation: str | None = None) -> list[RecordedRequest]:
        """Return the requests seen so far (of one operation, when given)."""
        with self._state.lock:
            return [r for r in self._state.requests if operation in (None, r.operation)]

    @contextmanager
    def fault(self, fault: Fault) -> Iterator[Fault]:
        """Apply ``fault`` inside a ``with`` block only."""
        self.add(fault)
        try:
            yield fault
        finally:
            with self._state.lock:
                if fault in self._state.faults:
                    self._state.faults.remove(fault)

    def _take_fault(self, operation: str) -> Fault | None:
        with self._state.lock:
            for fault in self._state.faults:
                if fault.matches(operation):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._state.lock:
            self._state.requests.append(request)

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        connection = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=30
        )
        return exchange(connection, method=method, path=path, headers=headers, body=body)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test output quiet; the record holds every request

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation, protocol = operation_of(self.command, self.path, body)
                fault = proxy._take_fault(operation)
                headers = dict(end_to_end_headers(self.headers.items()))
                if fault is not None and fault.kind == "latency":
                    time.sleep(fault.delay_s)
                if fault is not None and fault.kind in ("server_error", "throttle"):
                    self._reply_error(fault, operation=operation, protocol=protocol, body=body)
                    return
                try:
                    status, reply_headers, payload = proxy._forward(
                        self.command, self.path, headers, body
                    )
                except OSError:
                    status, reply_headers, payload = 502, [], b""
                if fault is not None and fault.kind == "rewrite_reply" and fault.replace[0]:
                    payload = payload.replace(*fault.replace)
                if fault is not None and fault.kind == "lost_reply":
                    # The upstream applied the request; the caller only sees a server error.
                    self._reply_error(fault, operation=operation, protocol=protocol, body=body)
                    return
                proxy._record(
                    RecordedRequest(
                        operation,
                        self.command,
                        self.path,
                        body,
                        status,
                        fault.kind if fault else None,
                    )
                )
                self._send(status, reply_headers, payload)

            def _reply_error(
                self, fault: Fault, *, operation: str, protocol: WireProtocol, body: bytes
            ) -> None:
                if fault.kind == "throttle":
                    code = fault.code or THROTTLE_CODE_BY_PROTOCOL[protocol]
                    status = 400 if fault.status == 500 else fault.status
                else:
                    code, status = fault.code or "InternalFailure", fault.status
                payload, headers = _error_body(
                    protocol, code=code, message=f"injected {fault.kind}"
                )
                proxy._record(
                    RecordedRequest(operation, self.command, self.path, body, status, fault.kind)
                )
                self._send(status, list(headers.items()), payload)

            def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                send_reply(self, status, headers, payload)

            do_GET = _handle  # noqa: N815
            do_POST = _handle  # noqa: N815
            do_PUT = _handle  # noqa: N815
            do_DELETE = _handle  # noqa: N815

        return Handler
