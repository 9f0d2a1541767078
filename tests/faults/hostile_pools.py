"""Hypothesis strategies for hostile InferencePool bodies: valid pools with damage done.

Damage: a field removed, a value replaced by one of another type (null, bool, extreme
integers and floats, unicode and huge strings, lists, objects), an unknown field added.
Endpoint URLs (and Route53 record values) are never touched, so whatever the apiserver
accepts still only makes the operator talk to loopback ports.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from tests.api.strategies import valid_pools

# Subtrees left alone: they decide where the operator sends traffic (loopback only).
PROTECTED_KEYS = frozenset({"endpoint", "url", "values", "records", "apiVersion", "kind"})
HUGE_STRING_CHARS = 200_000
EXTREME_INTEGERS = (-(2**63), -1, 0, 2**31, 2**53 + 1, 2**63, 10**30)

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EXTREME_INTEGERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.just("x" * HUGE_STRING_CHARS),
    st.just("\u202e\u0000\ufeff\U0001f525"),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path below ``node`` that may be damaged."""
    found: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, Any]]
    if isinstance(node, dict):
        items = [(k, v) for k, v in node.items() if k not in PROTECTED_KEYS]
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return found
    for key, value in items:
        path = (*prefix, key)
        found.append(path)
        found.extend(_paths(value, path))
    return found


def _parent(body: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    return node


def _same_type_extreme(draw: st.DrawFn, value: Any) -> Any:
    """A value of the same JSON type, at an edge: extreme numbers, odd or huge strings."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return draw(st.sampled_from(EXTREME_INTEGERS) | st.integers(0, 1000) | st.integers())
    if isinstance(value, float):
        return draw(st.floats(allow_nan=False, allow_infinity=False))
    if isinstance(value, str):
        return draw(
            st.sampled_from(["", "x" * HUGE_STRING_CHARS, "\u202e\u0000\ufeff\U0001f525"])
            | st.text(max_size=30)
        )
    if isinstance(value, list):
        return draw(st.sampled_from([[], value + value[:1]]))
    return draw(hostile_values)


@st.composite
def hostile_pools(draw: st.DrawFn) -> dict[str, Any]:
    """A valid pool with 0..2 kinds of damage in its spec (mostly one)."""
    body = copy.deepcopy(draw(valid_pools()))
    for _ in range(draw(st.sampled_from([1, 1, 2, 0]))):
        paths = _paths(body["spec"], ("spec",))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(body, path)
        key = path[-1]
        action = draw(st.sampled_from(["edge", "edge", "edge", "remove", "retype", "unknown"]))
        if action == "remove":
            del parent[key]
        elif action == "retype":
            parent[key] = draw(hostile_values)
        elif action == "edge":
            parent[key] = _same_type_extreme(draw, parent[key])
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(hostile_values)
    return body
