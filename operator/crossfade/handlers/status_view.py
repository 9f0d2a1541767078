"""Human summary of InferencePools for `crossfade status` (pure: objects in, text out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crossfade.handlers.manual import MANUAL_ANNOTATIONS
from crossfade.handlers.status import phase_of

HISTORY_LINES = 5


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    return [_row(header, widths), *(_row(r, widths) for r in rows)]


def format_pool(pool: Mapping[str, Any]) -> str:
    """Return a multi-line summary of one pool: phase, placements, conditions, history."""
    meta = pool.get("metadata") or {}
    status = pool.get("status") or {}
    spec = pool.get("spec") or {}
    conditions = status.get("conditions") or ()
    lines = [
        f"{meta.get('namespace')}/{meta.get('name')}: {phase_of(conditions)}"
        f" (active: {status.get('activePlacement') or '-'},"
        f" healthy: {status.get('healthyPlacements') or '-'},"
        f" last failover: {status.get('lastFailoverTime') or 'never'})"
    ]
    manual = {k: v for k, v in (meta.get("annotations") or {}).items() if k in MANUAL_ANNOTATIONS}
    if manual:
        lines.append("  annotations: " + ", ".join(f"{k}={v}" for k, v in sorted(manual.items())))
    by_name = {p.get("name"): p for p in status.get("placements") or ()}
    rows = []
    for placement in spec.get("placements") or ():
        pname = str(placement.get("name"))
        facts = by_name.get(pname) or {}
        provider = (placement.get("provider") or {}).get("type") or "-"
        rows.append(
            [
                pname,
                str(placement.get("priority", "-")),
                str(provider),
                str(facts.get("health") or "Unknown"),
                str(facts.get("weight", "-")),
                f"{facts.get('readyNodes', '-')}/{facts.get('desiredNodes', '-')}",
                str(facts.get("reason") or ""),
            ]
        )
    header = ["PLACEMENT", "PRIO", "PROVIDER", "HEALTH", "WEIGHT", "READY/DESIRED", "REASON"]
    lines.extend("  " + line for line in _table(header, rows))
    if conditions:
        lines.append("  conditions:")
        for c in conditions:
            lines.append(
                f"    {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
            )
    history = list(status.get("history") or ())[:HISTORY_LINES]
    if history:
        lines.append("  last transitions:")
        for h in history:
            move = f"{h.get('from') or '-'} -> {h.get('to') or '-'}"
            lines.append(f"    {h.get('time')} {h.get('reason')} {move}: {h.get('message')}")
    return "\n".join(lines)


def format_pools(pools: Sequence[Mapping[str, Any]]) -> str:
    """Return summaries of several pools separated by blank lines."""
    if not pools:
        return "no InferencePools found"
    return "\n\n".join(format_pool(pool) for pool in pools)
