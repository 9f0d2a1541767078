"""Deterministic, yamllint-clean YAML for generated files: long strings folded at 80 columns."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

LINE_MAX_CHARS = 80
INDENT_CHARS = 2


class YamlWriteError(ValueError):
    """A value cannot be written as block YAML by this writer."""


def _scalar(value: Any) -> str:
    """Render a scalar the way PyYAML's safe dumper would quote it, on one line."""
    text = yaml.safe_dump(value, width=10**9, allow_unicode=False, default_flow_style=True)
    return text.rstrip("\n").removesuffix("\n...").rstrip("\n")


def _foldable(value: str) -> bool:
    return (
        bool(value)
        and value == value.strip()
        and "  " not in value
        and "\n" not in value
        and "\t" not in value
    )


def _scalar_lines(prefix: str, value: Any, indent: int) -> list[str]:
    rendered = _scalar(value)
    if len(prefix) + len(rendered) <= LINE_MAX_CHARS or not isinstance(value, str):
        return [prefix + rendered]
    if not _foldable(value):
        return [prefix + rendered]
    pad = " " * (indent + INDENT_CHARS)
    wrapped = textwrap.wrap(
        value,
        width=LINE_MAX_CHARS - len(pad),
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [prefix + ">-", *(pad + line for line in wrapped)]


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            prefix = f"{pad}{_scalar(str(key))}:"
            if isinstance(item, Mapping | list | tuple) and not item:
                out.append(f"{prefix} {'{}' if isinstance(item, Mapping) else '[]'}")
            elif isinstance(item, Mapping | list | tuple):
                out.append(prefix)
                out.extend(_lines(item, indent + INDENT_CHARS))
            else:
                out.extend(_scalar_lines(prefix + " ", item, indent))
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                inner = _lines(item, indent + INDENT_CHARS)
                inner[0] = f"{pad}- {inner[0][indent + INDENT_CHARS :]}"
                out.extend(inner)
            else:
                out.extend(_scalar_lines(f"{pad}- ", item, indent))
        return out
    raise YamlWriteError(f"expected a mapping or a list, got {type(value).__name__}")


def dump_document(document: Mapping[str, Any], *, header: str = "") -> str:
    """Return ``header`` (comment lines), ``---`` and the document as block YAML."""
    return header + "---\n" + "\n".join(_lines(document, 0)) + "\n"
