"""Edit nested bodies by Kubernetes-style field paths (``spec.placements[0].nodes.min``)."""

from __future__ import annotations

import re
from typing import Any

DELETE = object()
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else name for name, index in _PART.findall(path)]


def edit(body: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with DELETE remove) the field at ``path``, creating mappings on the way."""
    parts = _parts(path)
    node: Any = body
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
