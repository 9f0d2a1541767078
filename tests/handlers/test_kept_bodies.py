"""The pool body kopf keeps for a daemon is compact (handlers/kept_bodies.py).

kopf runs in this process against the real apiserver with the committed CRD, the same
``kopf.on.event`` compaction the operator registers, and a daemon that reports the metadata
of the body kopf hands it: no managedFields (the apiserver's own copy keeps them), and
keys and short values are the process's interned strings.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from typing import Any

import kopf
import pytest

from crossfade.handlers.kept_bodies import (
    MANAGED_FIELDS,
    compact_watch_event,
    share_strings,
)
from crossfade.testing.controlplane import TestCluster
from tests.api.samples import BASE_POOL

from .kopf_in_process import kopf_running, pool_resource, pools_served

SEEN_WAIT_S = 30.0


def _registry(seen: asyncio.Queue[dict[str, Any]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = pool_resource(registry)

    @kopf.on.event(**resource)
    async def trim(**kwargs: Any) -> None:
        compact_watch_event(kwargs["event"])

    @kopf.daemon(**resource, cancellation_timeout=1.0)
    async def report(**kwargs: Any) -> None:
        stopped: kopf.DaemonStopped = kwargs["stopped"]
        body: kopf.Body = kwargs["body"]
        while not stopped:
            # deepcopy copies containers but hands back the same str objects.
            await seen.put(copy.deepcopy(dict(body["metadata"])))
            await asyncio.sleep(0.1)

    return registry


async def _until(seen: asyncio.Queue[dict[str, Any]], wanted: str) -> dict[str, Any]:
    """The first metadata the daemon reports with annotation ``wanted`` set."""
    async with asyncio.timeout(SEEN_WAIT_S):
        while True:
            metadata = await seen.get()
            if wanted in (metadata.get("annotations") or {}):
                return metadata


async def test_the_daemon_body_has_no_managed_fields_and_shared_strings_after_each_event(
    management_cluster: TestCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = pools_served(management_cluster, namespace, monkeypatch)
    body = copy.deepcopy(BASE_POOL)
    body["metadata"] = {"name": "kept", "annotations": {"test/step": "created"}}
    assert pools.create(body).ok
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with kopf_running(_registry(seen), namespace):
        first = await _until(seen, "test/step")
        patch = {"metadata": {"annotations": {"test/later": "patched"}}}
        assert (await asyncio.to_thread(pools.merge_patch, "kept", patch)).ok
        later = await _until(seen, "test/later")
    stored = pools.get("kept").body["metadata"]
    assert stored[MANAGED_FIELDS], "the apiserver keeps managedFields; the test needs them"
    assert MANAGED_FIELDS not in first
    assert MANAGED_FIELDS not in later
    assert later["resourceVersion"] != first["resourceVersion"]
    for metadata in (first, later):
        assert all(sys.intern(key) is key for key in metadata)
        assert all(sys.intern(key) is key for key in metadata["annotations"])
        assert sys.intern(metadata["namespace"]) is metadata["namespace"]


def test_share_strings_leaves_one_copy_of_each_key_and_short_value() -> None:
    text = json.dumps(
        {
            "spec": {"placements": [{"name": "aws", "priority": 100}, {"name": "gke"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "message": "x" * 65}]},
        }
    )
    first, second = json.loads(text), json.loads(text)
    spec, placements = second["spec"], second["spec"]["placements"]
    assert share_strings(first) is first and share_strings(second) is second
    assert first == second == json.loads(text)
    assert second["spec"] is spec and second["spec"]["placements"] is placements
    assert list(second) == ["spec", "status"]  # key order kept
    (key_one,), (key_two,) = first["spec"].keys(), second["spec"].keys()
    assert key_one is key_two
    assert first["spec"]["placements"][0]["name"] is second["spec"]["placements"][0]["name"]
    ready_one = first["status"]["conditions"][0]
    ready_two = second["status"]["conditions"][0]
    assert ready_one["status"] is ready_two["status"]
    assert ready_one["message"] is not ready_two["message"]  # long strings stay per object


def test_compact_watch_event_leaves_anything_else_alone() -> None:
    event: dict[str, Any] = {"type": "MODIFIED", "object": {"metadata": {"name": "x"}}}
    compact_watch_event(event)
    assert event == {"type": "MODIFIED", "object": {"metadata": {"name": "x"}}}
    error: dict[str, Any] = {"type": "ERROR", "object": "not an object"}
    compact_watch_event(error)
    assert error == {"type": "ERROR", "object": "not an object"}
    empty: dict[str, Any] = {}
    compact_watch_event(empty)
    assert empty == {}
