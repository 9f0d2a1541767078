"""Make the InferencePool bodies kopf keeps for the pool loops smaller.

kopf keeps the newest watched object of every pool with a daemon for as long as the daemon
runs (``DaemonsMemory.live_fresh_body``): the raw dict of the last watch event, replaced on
every event. A fleet pool is about 11 KB of JSON and 48.5 KiB as Python objects, and 27 KiB
of that is ``metadata.managedFields`` (server-side apply bookkeeping: hundreds of small
``"f:..."`` dicts), which neither kopf nor crossfade reads. At 1000 pools that is 27 MiB
of the operator's RSS for nothing.

``compact_watch_event`` removes it from the raw object of a watch event. It is called
from the pool's ``kopf.on.event`` handler: kopf has already built the change causes and the
diff of that event from the same object by then, and the daemons read the object only
through the kopf body that wraps this dict. The apiserver has no way to leave the field
out of a watch, so the trimming happens here. ``PoolWriter`` drops it from the answers of
its own writes too, which it keeps until the watch catches up.

What is left is mostly the same strings again and again: every decoded event has its own
copy of each key (``"placements"``, ``"lastTransitionTime"``, ...) and of short values
(``"True"``, ``"Healthy"``), because the JSON decoder shares strings only within one
document. ``share_strings`` swaps them, in place, for one interned copy per process
(``sys.intern``; interned strings are freed once nothing uses them). A pool shaped like
the quickstart's goes from 14.3 to 7.3 KB of Python objects. Containers keep their
identity and key order, so kopf's views of the body stay valid.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

MANAGED_FIELDS = "managedFields"
# Longer strings are messages, JSON annotations and the like: rarely equal across pools.
SHARED_STRING_MAX_LEN = 64


def compact_watch_event(event: Mapping[str, Any]) -> None:
    """``compact_kept_object`` on the object of a raw watch event, in place.

    Anything not shaped like a watch event is left alone (kopf hands the raw event as
    received).
    """
    compact_kept_object(event.get("object"))


def compact_kept_object(obj: object) -> None:
    """Drop managedFields from one decoded object and share its strings, in place."""
    drop_managed_fields(obj)
    if isinstance(obj, dict):
        share_strings(obj)


def share_strings(value: Any) -> Any:
    """Replace every key and every short string value of decoded JSON by its interned copy.

    Dicts and lists are changed in place and returned; a string is returned interned.
    """
    if isinstance(value, dict):
        items = list(value.items())
        value.clear()
        for key, item in items:
            value[sys.intern(key) if isinstance(key, str) else key] = share_strings(item)
        return value
    if isinstance(value, list):
        value[:] = [share_strings(item) for item in value]
        return value
    if isinstance(value, str) and len(value) <= SHARED_STRING_MAX_LEN:
        return sys.intern(value)
    return value


def drop_managed_fields(obj: object) -> bool:
    """Drop ``metadata.managedFields`` from one decoded object, in place (True if dropped)."""
    if not isinstance(obj, dict):
        return False
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return False
    return metadata.pop(MANAGED_FIELDS, None) is not None
