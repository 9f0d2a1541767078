"""Pool status built from a reconcile pass, and the merge patch that writes only what changed.

Status holds only slowly-changing facts (health, sizes, weights, conditions, history), never
per-probe timestamps, so at steady state the newly built status equals the stored one and
no write is made.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic_core import PydanticUndefined

from crossfade.api.status import PlacementStatus
from crossfade.engine.plan import RecordTransition, SetCondition

HISTORY_MAX_ENTRIES = 20
MESSAGE_MAX_CHARS = 512

JsonDict = dict[str, Any]


def iso_time(epoch_s: float) -> str:
    """Return an RFC 3339 UTC timestamp with second precision (as metav1.Time)."""
    moment = datetime.datetime.fromtimestamp(int(epoch_s), tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(message: str) -> str:
    return message if len(message) <= MESSAGE_MAX_CHARS else message[: MESSAGE_MAX_CHARS - 1] + "…"


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[SetCondition],
    *,
    now: float,
    observed_generation: int | None,
) -> list[JsonDict]:
    """Return conditions with ``updates`` applied, keeping untouched ones as they were.

    ``lastTransitionTime`` changes only when a condition's status changes, as metav1
    prescribes; a changed reason or message alone keeps the old time.
    """
    by_type: dict[str, JsonDict] = {
        str(c.get("type")): dict(c) for c in previous or () if c.get("type")
    }
    order = [str(c.get("type")) for c in previous or () if c.get("type")]
    for update in updates:
        kind = str(update.type)
        old = by_type.get(kind)
        since = (
            old.get("lastTransitionTime")
            if old is not None and old.get("status") == str(update.status)
            else iso_time(now)
        )
        condition: JsonDict = {
            "type": kind,
            "status": str(update.status),
            "reason": update.reason,
            "message": _clip(update.message),
            "lastTransitionTime": since,
        }
        if observed_generation is not None:
            condition["observedGeneration"] = observed_generation
        if kind not in by_type:
            order.append(kind)
        by_type[kind] = condition
    return [by_type[kind] for kind in order]


def history_entry(transition: RecordTransition) -> JsonDict:
    """Return one status.history item for a traffic transition."""
    entry: JsonDict = {
        "time": iso_time(transition.at),
        "reason": transition.reason,
        "message": _clip(transition.message),
    }
    if transition.from_placement is not None:
        entry["from"] = transition.from_placement
    if transition.to_placement:
        entry["to"] = transition.to_placement
    if transition.duration_seconds:
        entry["durationSeconds"] = transition.duration_seconds
    return entry


def merge_history(
    previous: Sequence[Mapping[str, Any]] | None, transitions: Iterable[RecordTransition]
) -> list[JsonDict]:
    """Return history newest first, bounded to HISTORY_MAX_ENTRIES.

    Transitions without a destination (fail-static holds) are left to Events: the API's
    history entries always name where traffic went.
    """
    newest_first = sorted(transitions, key=lambda t: t.at, reverse=True)
    added = [history_entry(t) for t in newest_first if t.to_placement]
    return (added + [dict(item) for item in previous or ()])[:HISTORY_MAX_ENTRIES]


def merge_patch(old: Any, new: Any) -> Any:
    """Return the JSON merge patch (RFC 7386) turning ``old`` into ``new``; {} when equal.

    Lists are replaced whole, as merge patch prescribes; keys missing from ``new`` are
    deleted with null.
    """
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: JsonDict = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(old[key], Mapping) and isinstance(value, Mapping):
                patch[key] = merge_patch(old[key], value)
            else:
                patch[key] = value
    return patch


def status_patch(stored: Mapping[str, Any] | None, built: Mapping[str, Any]) -> JsonDict:
    """Return the merge patch for status; {} when nothing changed (then write nothing).

    Only keys crossfade manages are compared: keys absent from ``built`` but present in
    ``stored`` are removed only when they are crossfade's own (listed in MANAGED_KEYS).
    """
    stored = dict(stored or {})
    foreign = {key: value for key, value in stored.items() if key not in MANAGED_KEYS}
    target = {**foreign, **built}
    patch = merge_patch(stored, target)
    return dict(patch) if isinstance(patch, Mapping) else {}


# Status fields crossfade writes (the CRD's status schema, crossfade.api.status).
MANAGED_KEYS = frozenset(
    {
        "observedGeneration",
        "activePlacement",
        "preferredPlacement",
        "healthyPlacements",
        "placements",
        "conditions",
        "history",
        "lastFailoverTime",
    }
)


def _server_defaults() -> JsonDict:
    """Values the apiserver fills into every status.placements[] item (the CRD's defaults)."""
    return {
        field.alias or name: (
            field.default.value if isinstance(field.default, enum.Enum) else field.default
        )
        for name, field in PlacementStatus.model_fields.items()
        if field.default is not None and field.default is not PydanticUndefined
    }


# Built items carry them too: the stored items always do, and placements is an atomic list,
# so an item without them would differ from the stored one and be rewritten every pass.
PLACEMENT_SERVER_DEFAULTS = _server_defaults()


def placement_summaries(
    *,
    names: Sequence[str],
    state: Mapping[str, Any],
    weights: Mapping[str, int] | None,
) -> list[JsonDict]:
    """Return status.placements from the engine state's durable per-placement facts."""
    placements = state.get("placements") or {}
    result: list[JsonDict] = []
    for name in names:
        facts = placements.get(name) or {}
        item: JsonDict = {
            **PLACEMENT_SERVER_DEFAULTS,
            "name": name,
            "health": facts.get("health") or "Unknown",
        }
        for source, target in (
            ("reason", "reason"),
            ("desired", "desiredNodes"),
            ("readyNodes", "readyNodes"),
            ("providerError", "providerError"),
        ):
            if facts.get(source) is not None:
                item[target] = facts[source]
        if weights is not None:
            item["weight"] = int(weights.get(name, 0))
        result.append(item)
    return result


def phase_of(conditions: Sequence[Mapping[str, Any]]) -> str:
    """Return a one-word summary (FailStatic > FailingOver > ... > Ready) for display."""
    true_types = {c.get("type") for c in conditions if c.get("status") == "True"}
    for kind, phase in (
        ("FailStatic", "FailStatic"),
        ("FailingOver", "FailingOver"),
        ("FailedOver", "FailedOver"),
        ("Degraded", "Degraded"),
        ("Ready", "Ready"),
    ):
        if kind in true_types:
            return phase
    return "Pending"
