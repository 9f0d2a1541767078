"""Node probe: a watch-backed cache of one placement's Nodes, summarised as a NodeObservation.

List once, then watch from the list's resourceVersion (with bookmarks); a watch that ends
is resumed from the last resourceVersion seen, and one that expired (410 Gone) is replaced
by a fresh list. Only the few facts the engine needs are kept per Node, so a cache of a
large node group stays small, and reading it costs no API call.

With ``group_label`` one cache serves every node group of a cluster: it watches the Nodes
carrying that label (an existence selector) and keeps each Node's label value, and
``summary(group=...)`` counts one group's Nodes. One watch per cluster instead of one per
node group matters at scale: each watch holds a TLS connection, and asyncio gives every TLS
connection a 256 KiB read buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.engine.observations import NodeObservation
from crossfade.probes.scheduler import ProbeNotReadyError

log = logging.getLogger(__name__)

ACCELERATOR_RESOURCES = ("nvidia.com/gpu", "aws.amazon.com/neuron", "google.com/tpu")
DEFAULT_WATCH_TIMEOUT_S = 300
WATCH_CLIENT_GRACE_S = 30
RETRY_BACKOFF_S = 1.0
RETRY_BACKOFF_MAX_S = 30.0
HTTP_GONE = 410


class WatchExpiredError(Exception):
    """The resourceVersion a watch resumed from is too old (410 Gone): list again."""


class NodeCacheNotSyncedError(ProbeNotReadyError):
    """The cache has not completed its first list yet, so it knows nothing."""


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node probe keeps of one Node."""

    name: str
    ready: bool
    cordoned: bool
    accelerators: int
    created_at: float | None


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """Counts over a placement's Nodes at one moment.

    ``allocatable_accelerators`` counts only Ready, uncordoned Nodes: the accelerators
    new model replicas could actually be scheduled onto.
    """

    total: int
    ready: int
    not_ready: int
    cordoned: int
    allocatable_accelerators: int
    ages_s: Mapping[str, float]

    def to_observation(self, *, placement: str, at: float) -> NodeObservation:
        return NodeObservation(
            placement=placement,
            at=at,
            ready_nodes=self.ready,
            total_nodes=self.total,
            allocatable_accelerators=self.allocatable_accelerators,
            not_ready=self.not_ready,
            cordoned=self.cordoned,
        )


def node_facts(node: Mapping[str, Any]) -> NodeFacts:
    """Extract the facts from a Node as the API serves it (a JSON dict)."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    allocatable = status.get("allocatable") or {}
    accelerators = sum(_count(allocatable.get(name)) for name in ACCELERATOR_RESOURCES)
    return NodeFacts(
        name=str(metadata.get("name", "")),
        ready=ready,
        cordoned=bool(spec.get("unschedulable", False)),
        accelerators=accelerators,
        created_at=_epoch(metadata.get("creationTimestamp")),
    )


def summarize(facts: Iterable[NodeFacts], *, now: float) -> NodeSummary:
    nodes = list(facts)
    ready = [n for n in nodes if n.ready]
    return NodeSummary(
        total=len(nodes),
        ready=len(ready),
        not_ready=len(nodes) - len(ready),
        cordoned=sum(1 for n in nodes if n.cordoned),
        allocatable_accelerators=sum(n.accelerators for n in ready if not n.cordoned),
        ages_s={n.name: max(0.0, now - n.created_at) for n in nodes if n.created_at is not None},
    )


def _count(quantity: object) -> int:
    # Extended resources such as nvidia.com/gpu are whole numbers by API validation.
    try:
        return max(0, int(str(quantity)))
    except ValueError:
        return 0


def _epoch(timestamp: object) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    # With _preload_content=False the generated client hands back any status unchecked.
    if 200 <= response.status < 300:
        return
    if response.status == HTTP_GONE:
        raise WatchExpiredError(f"HTTP {response.status}")
    raise ApiException(status=response.status, reason=response.reason)


def label_selector(labels: Mapping[str, str]) -> str:
    """Render equality labels as a Kubernetes label selector."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def node_group_of(node: Mapping[str, Any], label: str) -> str:
    """The value of ``label`` on a Node as the API serves it ("" without it)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    return str(labels.get(label) or "")


class NodeCache:
    """Keeps the facts of the Nodes matching ``selector`` current; ``start()``, then read.

    ``group_label``: also remember each Node's value of that label, so that ``summary`` and
    ``observe`` can count the Nodes of one group (see the module docstring).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        selector: str,
        watch_timeout_s: int = DEFAULT_WATCH_TIMEOUT_S,
        wall_clock: Callable[[], float] = time.time,
        group_label: str = "",
    ) -> None:
        self.selector = selector
        self.group_label = group_label
        self._groups: dict[str, str] = {}  # Node name -> its group_label value
        self._members: dict[str, set[str]] = {}  # group_label value -> Node names
        self.lists = 0
        self.watches = 0
        self._core = client.CoreV1Api(api)
        self._watch_timeout_s = watch_timeout_s
        self._wall_clock = wall_clock
        self._nodes: dict[str, NodeFacts] = {}
        self._synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._resource_version: str | None = None
        # Called when a watched Node's readiness or schedulability changes, appears or goes,
        # per group_label value (None: every change): pool passes are woken by it.
        self._listeners: dict[str | None, set[Callable[[], object]]] = {}

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"node-cache[{self.selector}]")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> NodeCache:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def summary(self, *, now: float | None = None, group: str | None = None) -> NodeSummary:
        """Counts over the cached Nodes; with ``group``, over that group's Nodes only."""
        if not self.synced:
            raise NodeCacheNotSyncedError(self.selector)
        facts: Iterable[NodeFacts] = self._nodes.values()
        if group is not None:
            facts = [self._nodes[name] for name in self._members.get(group, ())]
        return summarize(facts, now=self._wall_clock() if now is None else now)

    def observe(self, *, placement: str, group: str | None = None) -> NodeObservation:
        """The current summary as the engine's observation (raises if not synced yet)."""
        at = self._wall_clock()
        return self.summary(now=at, group=group).to_observation(placement=placement, at=at)

    async def wait_until(
        self,
        predicate: Callable[[NodeSummary], bool],
        *,
        timeout_s: float,
        group: str | None = None,
    ) -> NodeSummary:
        """Wait (event-driven, no polling) until the summary satisfies ``predicate``."""
        async with asyncio.timeout(timeout_s), self._changed:
            while True:
                if self.synced:
                    summary = self.summary(group=group)
                    if predicate(summary):
                        return summary
                await self._changed.wait()

    async def _run(self) -> None:
        backoff_s = RETRY_BACKOFF_S
        while True:
            try:
                if self._resource_version is None:
                    self._resource_version = await self._list()
                self._resource_version = await self._watch(self._resource_version)
                backoff_s = RETRY_BACKOFF_S
            except WatchExpiredError:
                log.info("node watch expired, listing again", extra={"selector": self.selector})
                self._resource_version = None
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning(
                    "node watch failed, retrying",
                    extra={"selector": self.selector, "error": type(exc).__name__},
                )
                self._resource_version = None
                await asyncio.sleep(backoff_s)
                backoff_s = min(RETRY_BACKOFF_MAX_S, backoff_s * 2)

    async def _list(self) -> str:
        response = await self._raw(label_selector=self.selector)
        try:
            await _raise_for_status(response)
            body = json.loads(await response.read())
        finally:
            response.release()
        self.lists += 1
        self._nodes, self._groups, self._members = {}, {}, {}
        for item in body.get("items") or ():
            self._put(node_facts(item), item)
        self._synced.set()
        await self._notify()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, resource_version: str) -> str:
        """Follow one watch request to its end; return the last resourceVersion seen."""
        self.watches += 1
        await self._notify()  # waiters may be counting watches
        response = await self._raw(
            label_selector=self.selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=self._watch_timeout_s,
            _request_timeout=self._watch_timeout_s + WATCH_CLIENT_GRACE_S,
        )
        try:
            await _raise_for_status(response)
            while line := await response.content.readline():
                resource_version = await self._apply(json.loads(line), resource_version)
        finally:
            response.release()
        return resource_version

    async def _raw(self, **params: Any) -> aiohttp.ClientResponse:
        # Raw JSON: building V1Node models for every event would cost far more CPU.
        response = await self._core.list_node(_preload_content=False, **params)
        return cast(aiohttp.ClientResponse, response)

    def listen(self, group: str | None, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` when a Node of ``group`` changes readiness; return the unsubscribe."""
        self._listeners.setdefault(group, set()).add(callback)

        def unsubscribe() -> None:
            listeners = self._listeners.get(group)
            if listeners is not None:
                listeners.discard(callback)
                if not listeners:
                    del self._listeners[group]

        return unsubscribe

    def _tell(
        self, previous: NodeFacts | None, now: NodeFacts | None, node: Mapping[str, Any]
    ) -> None:
        if not self._listeners or not self.synced:
            return
        if (
            previous is not None
            and now is not None
            and (previous.ready, previous.cordoned)
            == (
                now.ready,
                now.cordoned,
            )
        ):
            return
        groups: list[str | None] = [None]
        if self.group_label:
            groups.append(node_group_of(node, self.group_label))
        for group in groups:
            for callback in list(self._listeners.get(group, ())):
                callback()

    async def _apply(self, event: Mapping[str, Any], resource_version: str) -> str:
        """Apply one watch event to the cache; return the resourceVersion to resume from."""
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == HTTP_GONE:
                raise WatchExpiredError(str(obj.get("message", "")))
            raise ApiException(status=obj.get("code"), reason=str(obj.get("message", "")))
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_version
        facts = node_facts(obj)
        previous = self._nodes.get(facts.name)
        if kind == "DELETED":
            self._drop(facts.name)
            self._tell(previous, None, obj)
        elif kind in ("ADDED", "MODIFIED"):
            self._put(facts, obj)
            self._tell(previous, facts, obj)
        await self._notify()
        return new_version

    def _put(self, facts: NodeFacts, node: Mapping[str, Any]) -> None:
        self._nodes[facts.name] = facts
        if not self.group_label:
            return
        group = node_group_of(node, self.group_label)
        previous = self._groups.get(facts.name)
        if previous != group:
            if previous is not None:
                self._members.get(previous, set()).discard(facts.name)
            self._groups[facts.name] = group
            self._members.setdefault(group, set()).add(facts.name)

    def _drop(self, name: str) -> None:
        self._nodes.pop(name, None)
        group = self._groups.pop(name, None)
        if group is not None:
            members = self._members.get(group, set())
            members.discard(name)
            if not members:
                self._members.pop(group, None)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
