"""Structural OpenAPI v3 schema for the CRD, converted from the pydantic models' JSON schema."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from crossfade.api.constants import TIMESTAMP_MAX_CHARS

# Key order in the emitted schema, so the YAML reads top-down and never reorders.
KEY_ORDER = (
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "properties",
    "required",
    "x-kubernetes-validations",
)
RULE_KEY_ORDER = ("rule", "message", "fieldPath", "reason")
DROPPED_KEYS = frozenset({"title", "additionalProperties", "$defs"})
SIBLING_KEYS = ("description", "default", "x-kubernetes-list-type", "x-kubernetes-list-map-keys")


class SchemaError(ValueError):
    """The models produce a schema the apiserver would not accept as structural and bounded."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref`` and collapse ``anyOf [X, null]`` into X, keeping sibling keys."""
    siblings = {k: v for k, v in node.items() if k in SIBLING_KEYS}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**_resolve(copy.deepcopy(target), defs), **siblings}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise SchemaError(f"unions other than Optional are not structural: {node}")
        merged = {**_resolve(branches[0], defs), **siblings}
        if merged.get("default", "") is None:
            del merged["default"]
        return merged
    if "allOf" in node and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return {**_resolve(node["allOf"][0], defs), **rest}
    return node


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    unknown = set(node) - set(KEY_ORDER)
    if unknown:
        raise SchemaError(f"unexpected schema keys {sorted(unknown)} in {node}")
    return {key: node[key] for key in KEY_ORDER if key in node}


def _convert(
    node: dict[str, Any], defs: dict[str, Any], path: str, *, is_item: bool = False
) -> dict[str, Any]:
    node = _resolve(node, defs)
    out = {k: v for k, v in node.items() if k not in DROPPED_KEYS}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("default", "") is None:
        del out["default"]
    if "exclusiveMinimum" in out or "exclusiveMaximum" in out:
        raise SchemaError(f"{path}: use ge/le bounds (OpenAPI v3.0 exclusive bounds are booleans)")
    kind = out.get("type")
    if kind == "string":
        if out.get("format") == "date-time":
            out.setdefault("maxLength", TIMESTAMP_MAX_CHARS)
        if "maxLength" not in out and "enum" not in out:
            raise SchemaError(f"{path}: every string needs max_length or an enum")
    elif kind == "array":
        if "maxItems" not in out:
            raise SchemaError(f"{path}: every list needs max_length (maxItems)")
        out["items"] = _convert(out["items"], defs, f"{path}[]", is_item=True)
    elif kind == "object":
        properties = out.get("properties")
        if not properties:
            raise SchemaError(f"{path}: objects need declared properties")
        out["properties"] = {
            name: _convert(child, defs, f"{path}.{name}") for name, child in properties.items()
        }
    elif kind not in {"integer", "boolean"}:
        raise SchemaError(f"{path}: unsupported schema type {kind!r}")
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [
            {key: rule[key] for key in RULE_KEY_ORDER if key in rule}
            for rule in out["x-kubernetes-validations"]
        ]
    if "description" not in out and not is_item:
        raise SchemaError(f"{path}: every field needs a description")
    return _ordered(out)


def structural_schema(model: type[BaseModel], *, path: str) -> dict[str, Any]:
    """Return the CRD schema of ``model`` (validation mode, camelCase names, refs inlined)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs, path)
