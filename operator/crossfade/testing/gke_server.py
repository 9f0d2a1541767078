"""A local HTTP server speaking the GKE v1 REST API for the node-pool calls crossfade makes.

Endpoints (exactly those the GKE provider and provisioner use):

- ``GET  /v1/projects/P/locations/L/clusters/C/nodePools``              -> ``ListNodePoolsResponse``
- ``POST /v1/projects/P/locations/L/clusters/C/nodePools``              -> ``Operation``
  (CREATE_NODE_POOL; ``409 ALREADY_EXISTS`` for a taken name)
- ``GET  /v1/projects/P/locations/L/clusters/C/nodePools/N``            -> ``NodePool``
- ``DELETE /v1/projects/P/locations/L/clusters/C/nodePools/N``          -> ``Operation``
- ``POST /v1/projects/P/locations/L/clusters/C/nodePools/N:setSize``    -> ``Operation``
- ``POST /v1/projects/P/locations/L/clusters/C/nodePools/N:setAutoscaling`` -> ``Operation``
- ``GET  /v1/projects/P/locations/L/operations/O``                      -> ``Operation``

Every response body is built from ``google.cloud.container_v1`` message types and every
request body is parsed strictly as the real request type (unknown fields rejected), so the
official client and this server cannot drift apart silently. State is in memory; operations
finish after ``operation_duration_s`` of the injected clock; errors (HTTP status + google.rpc
status name), stockouts and quota exhaustion can be injected.

A create hitting a stockout (``set_machine_type_stockout``) behaves as GKE reports one: the
create call is accepted, its operation ends DONE with an error (google.rpc code
RESOURCE_EXHAUSTED, message naming ZONE_RESOURCE_POOL_EXHAUSTED) and the pool is left in
status ERROR with a GCE_STOCKOUT condition until it is deleted.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from google.cloud import container_v1
from google.protobuf import json_format
from google.rpc import status_pb2

from crossfade.testing.loopback import LoopbackServer, send_reply

NODE_POOL_PATH = re.compile(
    r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/clusters/[^/]+/nodePools/[^/:]+)"
    r"(?::(?P<verb>setSize|setAutoscaling))?$"
)
NODE_POOLS_PATH = re.compile(
    r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+/clusters/[^/]+)/nodePools$"
)
OPERATION_PATH = re.compile(r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/operations/[^/]+)$")
STOCKOUT_MESSAGE = (
    "Instance '{pool}-{zone}' creation failed: The zone '{zone}' does not have enough "
    "resources available to fulfill the request. ZONE_RESOURCE_POOL_EXHAUSTED"
)
QUOTA_MESSAGE = 'Insufficient regional quota to satisfy request: resource "NVIDIA_L4_GPUS"'
GRPC_STATUS_BY_HTTP: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
GRPC_CODE_BY_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ALREADY_EXISTS": 6,
    "ABORTED": 10,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
}
NodePoolStatus = container_v1.NodePool.Status
OperationStatus = container_v1.Operation.Status
ConditionCode = container_v1.StatusCondition.Code


@dataclass(frozen=True)
class InjectedError:
    """An HTTP error the server answers with instead of serving one request."""

    http_status: int
    message: str
    grpc_status: str = ""

    def body(self) -> dict[str, Any]:
        status = self.grpc_status or GRPC_STATUS_BY_HTTP.get(self.http_status, "UNKNOWN")
        return {"error": {"code": self.http_status, "message": self.message, "status": status}}


@dataclass
class PoolRecord:
    """Server-side state of one node pool; ``node_count`` is per zone, as in GKE.

    Like the real API, the ``NodePool`` message does not carry the current size: only
    ``initialNodeCount`` (fixed at creation) and the autoscaling bounds. ``node_count`` is the
    instance groups' size, which tests read from here the way an operator reads Node objects.
    """

    name: str
    zones: tuple[str, ...]
    node_count: int
    initial_node_count: int = 0
    autoscaling: container_v1.NodePoolAutoscaling | None = None
    status: int = NodePoolStatus.RUNNING
    status_message: str = ""
    conditions: list[container_v1.StatusCondition] = field(default_factory=list)
    stockout_zones: set[str] = field(default_factory=set)
    quota_exhausted: bool = False
    # As sent on create: machine type, Kubernetes labels, taints, resource labels, ...
    config: container_v1.NodeConfig | None = None

    def fail_for_capacity(self, *, status: int, code: int, message: str) -> str:
        """Leave the pool failed for want of capacity, as GCE reports it; return ``message``."""
        self.status = status
        self.status_message = message
        self.conditions = [
            container_v1.StatusCondition(
                code=code,
                message=message,
                canonical_code=GRPC_CODE_BY_STATUS["RESOURCE_EXHAUSTED"],
            )
        ]
        return message

    def to_message(self) -> container_v1.NodePool:
        short = self.name.rsplit("/", 1)[-1]
        return container_v1.NodePool(
            name=short,
            initial_node_count=self.initial_node_count,
            locations=list(self.zones),
            self_link=f"https://container.googleapis.com/v1/{self.name}",
            version="1.33.5-gke.1000",
            status=self.status,
            status_message=self.status_message,
            autoscaling=self.autoscaling,
            config=self.config,
            conditions=list(self.conditions),
            instance_group_urls=[
                f"https://www.googleapis.com/compute/v1/projects/p/zones/{zone}/"
                f"instanceGroupManagers/gke-{short}-{zone}-grp"
                for zone in self.zones
            ],
            etag=f"etag-{self.node_count}",
        )


@dataclass
class OperationRecord:
    """A long-running operation that completes at ``done_at`` (on the server's clock)."""

    name: str
    pool_name: str
    operation_type: int
    started_at: float
    done_at: float
    apply: Callable[[], str]
    finished: bool = False
    error_message: str = ""

    def to_message(self, *, now: float) -> container_v1.Operation:
        project_location = self.name.split("/operations/")[0]
        location = project_location.rsplit("/", 1)[-1]
        operation = container_v1.Operation(
            name=self.name.rsplit("/", 1)[-1],
            zone=location,
            location=location,
            operation_type=self.operation_type,
            self_link=f"https://container.googleapis.com/v1/{self.name}",
            target_link=f"https://container.googleapis.com/v1/{self.pool_name}",
            start_time=_rfc3339(self.started_at),
            status=OperationStatus.DONE if self.finished else OperationStatus.RUNNING,
        )
        if not self.finished:
            return operation
        operation.end_time = _rfc3339(self.done_at)
        if self.error_message:
            operation.status_message = self.error_message
            operation.error = status_pb2.Status(
                code=GRPC_CODE_BY_STATUS["RESOURCE_EXHAUSTED"], message=self.error_message
            )
        return operation


def _rfc3339(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received: method, path and parsed body (for contract tests)."""

    method: str
    path: str
    body: dict[str, Any] | None


class GKEState:
    """Node pools and operations behind the server; thread-safe, driven by an injected clock."""

    def __init__(self, *, clock: Callable[[], float] = time.time, operation_duration_s: float = 0):
        self.clock = clock
        self.operation_duration_s = operation_duration_s
        self.pools: dict[str, PoolRecord] = {}
        self.operations: dict[str, OperationRecord] = {}
        self.requests: list[RecordedRequest] = []
        self._errors: deque[InjectedError] = deque()
        self._ids = itertools.count(1)
        self.stockout_machine_types: set[str] = set()
        self.lock = threading.RLock()

    # ---- knobs for tests -------------------------------------------------------------------
    def add_pool(
        self,
        name: str,
        *,
        zones: tuple[str, ...] = ("us-central1-a",),
        node_count: int = 0,
        autoscaling: tuple[int, int] | None = None,
    ) -> PoolRecord:
        """Create a node pool; ``name`` is the full resource name."""
        scaling = None
        if autoscaling is not None:
            scaling = container_v1.NodePoolAutoscaling(
                enabled=True, min_node_count=autoscaling[0], max_node_count=autoscaling[1]
            )
        with self.lock:
            record = PoolRecord(
                name=name,
                zones=zones,
                node_count=node_count,
                initial_node_count=node_count,
                autoscaling=scaling,
            )
            self.pools[name] = record
            return record

    def fail_next(self, error: InjectedError, *, times: int = 1) -> None:
        """Answer the next ``times`` requests (any endpoint) with ``error``."""
        with self.lock:
            self._errors.extend([error] * times)

    def set_stockout(self, pool_name: str, *, zone: str, active: bool = True) -> None:
        """Make growth of ``pool_name`` in ``zone`` fail with ZONE_RESOURCE_POOL_EXHAUSTED."""
        with self.lock:
            pool = self.pools[pool_name]
            if active:
                pool.stockout_zones.add(zone)
            else:
                pool.stockout_zones.discard(zone)

    def set_machine_type_stockout(self, machine_type: str, *, active: bool = True) -> None:
        """Make every create of a ``machine_type`` pool end in ZONE_RESOURCE_POOL_EXHAUSTED."""
        with self.lock:
            if active:
                self.stockout_machine_types.add(machine_type)
            else:
                self.stockout_machine_types.discard(machine_type)

    def requests_of(self, method: str, path_suffix: str = "") -> list[RecordedRequest]:
        """Return the recorded requests of ``method`` whose path ends with ``path_suffix``."""
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def set_quota_exhausted(self, pool_name: str, *, active: bool = True) -> None:
        """Make growth of ``pool_name`` fail with a GCE_QUOTA_EXCEEDED condition."""
        with self.lock:
            self.pools[pool_name].quota_exhausted = active

    def node_count(self, pool_name: str) -> int:
        """Return the pool's current size across all its zones (what GCE is running)."""
        with self.lock:
            self._finish_due_operations()
            pool = self.pools.get(pool_name)
            return 0 if pool is None else pool.node_count * len(pool.zones)

    def node_count_source(self, pool_name: str) -> Callable[[], Awaitable[int]]:
        """Return an async reader of the pool's size (a ``NodeSimulator`` desired-size source)."""

        async def read() -> int:
            return self.node_count(pool_name)

        return read

    def delete_pool(self, pool_name: str) -> None:
        with self.lock:
            del self.pools[pool_name]

    # ---- request handling ------------------------------------------------------------------
    def take_injected_error(self) -> InjectedError | None:
        with self.lock:
            return self._errors.popleft() if self._errors else None

    def _finish_due_operations(self) -> None:
        now = self.clock()
        for operation in self.operations.values():
            if not operation.finished and now >= operation.done_at:
                operation.error_message = operation.apply()
                operation.finished = True

    def get_pool(self, name: str) -> container_v1.NodePool | InjectedError:
        with self.lock:
            self._finish_due_operations()
            pool = self.pools.get(name)
            if pool is None:
                return _not_found(name)
            return pool.to_message()

    def get_operation(self, name: str) -> container_v1.Operation | InjectedError:
        with self.lock:
            self._finish_due_operations()
            operation = self.operations.get(name)
            if operation is None:
                return _not_found(name)
            return operation.to_message(now=self.clock())

    def _pool_busy(self, pool_name: str) -> OperationRecord | None:
        for operation in self.operations.values():
            if operation.pool_name == pool_name and not operation.finished:
                return operation
        return None

    def list_pools(self, parent: str) -> container_v1.ListNodePoolsResponse:
        with self.lock:
            self._finish_due_operations()
            prefix = f"{parent}/nodePools/"
            return container_v1.ListNodePoolsResponse(
                node_pools=[
                    pool.to_message()
                    for name, pool in self.pools.items()
                    if name.startswith(prefix)
                ]
            )

    def create_pool(
        self, parent: str, node_pool: container_v1.NodePool
    ) -> container_v1.Operation | InjectedError:
        name = f"{parent}/nodePools/{node_pool.name}"
        with self.lock:
            self._finish_due_operations()
            if not node_pool.name:
                return InjectedError(400, "nodePool.name is required", "INVALID_ARGUMENT")
            if name in self.pools:
                return InjectedError(409, f"Already exists: {name}.", "ALREADY_EXISTS")
            zones = tuple(node_pool.locations) or ("us-central1-a",)
            pool = PoolRecord(
                name=name,
                zones=zones,
                node_count=0,
                initial_node_count=node_pool.initial_node_count,
                autoscaling=node_pool.autoscaling if node_pool.autoscaling.enabled else None,
                status=NodePoolStatus.PROVISIONING,
                config=node_pool.config,
            )
            self.pools[name] = pool
            machine_type = node_pool.config.machine_type

            def apply() -> str:
                if machine_type in self.stockout_machine_types:
                    return pool.fail_for_capacity(
                        status=NodePoolStatus.ERROR,
                        code=ConditionCode.GCE_STOCKOUT,
                        message=STOCKOUT_MESSAGE.format(pool=node_pool.name, zone=zones[0]),
                    )
                pool.status = NodePoolStatus.RUNNING
                pool.node_count = pool.initial_node_count
                return ""

            return self._start(
                pool,
                operation_type=container_v1.Operation.Type.CREATE_NODE_POOL,
                apply=apply,
                status=NodePoolStatus.PROVISIONING,
            )

    def delete_pool_request(self, name: str) -> container_v1.Operation | InjectedError:
        with self.lock:
            self._finish_due_operations()
            pool = self.pools.get(name)
            if pool is None:
                return _not_found(name)

            def apply() -> str:
                self.pools.pop(name, None)
                return ""

            return self._start(
                pool,
                operation_type=container_v1.Operation.Type.DELETE_NODE_POOL,
                apply=apply,
                status=NodePoolStatus.STOPPING,
            )

    def _start(
        self,
        pool: PoolRecord,
        *,
        operation_type: int,
        apply: Callable[[], str],
        status: int = NodePoolStatus.RECONCILING,
    ) -> container_v1.Operation | InjectedError:
        self._finish_due_operations()
        busy = self._pool_busy(pool.name)
        if busy is not None:
            # What GKE answers while another operation runs on the same node pool.
            return InjectedError(
                400,
                f"Cluster is running incompatible operation {busy.name.rsplit('/', 1)[-1]}.",
                "FAILED_PRECONDITION",
            )
        location = pool.name.split("/clusters/")[0]
        now = self.clock()
        name = f"{location}/operations/operation-{next(self._ids)}-{int(now)}"
        record = OperationRecord(
            name=name,
            pool_name=pool.name,
            operation_type=operation_type,
            started_at=now,
            done_at=now + self.operation_duration_s,
            apply=apply,
        )
        self.operations[name] = record
        pool.status = status
        self._finish_due_operations()
        return record.to_message(now=now)

    def set_size(self, name: str, node_count: int) -> container_v1.Operation | InjectedError:
        with self.lock:
            pool = self.pools.get(name)
            if pool is None:
                return _not_found(name)
            if node_count < 0:
                return InjectedError(400, "node_count must be >= 0", "INVALID_ARGUMENT")
            return self._start(
                pool,
                operation_type=container_v1.Operation.Type.SET_NODE_POOL_SIZE,
                apply=lambda: self._resize(pool, node_count),
            )

    def set_autoscaling(
        self, name: str, autoscaling: container_v1.NodePoolAutoscaling
    ) -> container_v1.Operation | InjectedError:
        with self.lock:
            pool = self.pools.get(name)
            if pool is None:
                return _not_found(name)
            if autoscaling.enabled and autoscaling.min_node_count > autoscaling.max_node_count:
                return InjectedError(
                    400, "min_node_count must be <= max_node_count", "INVALID_ARGUMENT"
                )

            def apply() -> str:
                pool.autoscaling = autoscaling
                # The cluster autoscaler keeps the pool within its new bounds.
                target = min(
                    max(pool.node_count, autoscaling.min_node_count), autoscaling.max_node_count
                )
                return self._resize(pool, target)

            return self._start(
                pool,
                operation_type=container_v1.Operation.Type.UPDATE_CLUSTER,
                apply=apply,
            )

    def _resize(self, pool: PoolRecord, node_count: int) -> str:
        """Apply a size change the way GCE would; return an error message or ''."""
        pool.conditions = []
        pool.status, pool.status_message = NodePoolStatus.RUNNING, ""
        if node_count <= pool.node_count:
            pool.node_count = node_count
            return ""
        if pool.quota_exhausted:
            return pool.fail_for_capacity(
                status=NodePoolStatus.RUNNING_WITH_ERROR,
                code=ConditionCode.GCE_QUOTA_EXCEEDED,
                message=QUOTA_MESSAGE,
            )
        stocked_out = [zone for zone in pool.zones if zone in pool.stockout_zones]
        if stocked_out:
            short = pool.name.rsplit("/", 1)[-1]
            return pool.fail_for_capacity(
                status=NodePoolStatus.RUNNING_WITH_ERROR,
                code=ConditionCode.GCE_STOCKOUT,
                message=STOCKOUT_MESSAGE.format(pool=short, zone=stocked_out[0]),
            )
        pool.node_count = node_count
        return ""

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)


def _not_found(name: str) -> InjectedError:
    return InjectedError(404, f"Not found: {name}.", "NOT_FOUND")


class _Handler(BaseHTTPRequestHandler):
    state: ClassVar[GKEState]

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; requests are recorded in ``GKEState.requests``."""

    def _reply(self, status: int, payload: str) -> None:
        send_reply(
            self, status, [("Content-Type", "application/json; charset=UTF-8")], payload.encode()
        )

    def _reply_message(self, result: Any) -> None:
        if isinstance(result, InjectedError):
            self._reply(result.http_status, json.dumps(result.body()))
        else:
            self._reply(HTTPStatus.OK, type(result).to_json(result))

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _received(self, method: str, body: dict[str, Any] | None) -> str | None:
        """Record the request and return its path; None once an injected error answered it."""
        path = self._path()
        self.state.record(RecordedRequest(method, path, body))
        injected = self.state.take_injected_error()
        if injected is not None:
            self._reply_message(injected)
            return None
        return path

    def do_GET(self) -> None:
        if (path := self._received("GET", None)) is None:
            return
        if (match := NODE_POOL_PATH.match(path)) and match["verb"] is None:
            self._reply_message(self.state.get_pool(match["name"]))
            return
        if pools := NODE_POOLS_PATH.match(path):
            self._reply_message(self.state.list_pools(pools["parent"]))
            return
        if match := OPERATION_PATH.match(path):
            self._reply_message(self.state.get_operation(match["name"]))
            return
        self._reply_message(InjectedError(404, f"no such endpoint: GET {path}", "NOT_FOUND"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode() or "{}"
        if (path := self._received("POST", json.loads(raw))) is None:
            return
        try:
            result = self._post(path, raw)
        except (json_format.ParseError, ValueError) as error:
            result = InjectedError(400, f"Invalid JSON payload received. {error}")
        self._reply_message(result)

    def _post(self, path: str, raw: str) -> Any:
        """Serve a POST: parse its body strictly as the real request type, then act on it."""
        if pools := NODE_POOLS_PATH.match(path):
            create = container_v1.CreateNodePoolRequest.from_json(raw, ignore_unknown_fields=False)
            self._check_name(create.parent, pools["parent"])
            return self.state.create_pool(pools["parent"], create.node_pool)
        match = NODE_POOL_PATH.match(path)
        if match is None or match["verb"] is None:
            return InjectedError(404, f"no such endpoint: POST {path}", "NOT_FOUND")
        if match["verb"] == "setSize":
            size = container_v1.SetNodePoolSizeRequest.from_json(raw, ignore_unknown_fields=False)
            self._check_name(size.name, match["name"])
            return self.state.set_size(match["name"], size.node_count)
        scaling = container_v1.SetNodePoolAutoscalingRequest.from_json(
            raw, ignore_unknown_fields=False
        )
        self._check_name(scaling.name, match["name"])
        return self.state.set_autoscaling(match["name"], scaling.autoscaling)

    def do_DELETE(self) -> None:
        if (path := self._received("DELETE", None)) is None:
            return
        if (match := NODE_POOL_PATH.match(path)) and match["verb"] is None:
            self._reply_message(self.state.delete_pool_request(match["name"]))
            return
        self._reply_message(InjectedError(404, f"no such endpoint: DELETE {path}", "NOT_FOUND"))

    @staticmethod
    def _check_name(body_name: str, path_name: str) -> None:
        if body_name and body_name != path_name:
            raise ValueError(f"name in body {body_name!r} differs from URL {path_name!r}")


class GKEServer(LoopbackServer):
    """Run a ``GKEState`` behind a threaded HTTP server on 127.0.0.1 (use as a context manager)."""

    def __init__(self, state: GKEState | None = None) -> None:
        self.state = state or GKEState()
        handler = type("BoundHandler", (_Handler,), {"state": self.state})
        super().__init__(handler, name="gke-server")

    @property
    def endpoint(self) -> str:
        return self.url

    def __enter__(self) -> GKEServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
