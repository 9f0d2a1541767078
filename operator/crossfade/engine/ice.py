"""Insufficient-capacity (ICE) cache: placements the cloud cannot grow, with backoff and cap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A stockout rarely clears within minutes; doubling per repeat up to an hour keeps asking
# without hammering a cloud that keeps saying no.
ICE_BACKOFF_CAP_S = 3600


@dataclass(frozen=True, slots=True)
class IceEntry:
    """One placement's stockout record."""

    until: float
    strikes: int
    message: str = ""


@dataclass(slots=True)
class IceCache:
    """Remembers which placements reported insufficient capacity, and until when to skip them.

    Mirrors Karpenter's UnavailableOfferings: ``mark_unavailable``, ``is_unavailable``,
    ``flush`` and a ``seq_num`` that changes whenever the contents change.
    """

    entries: dict[str, IceEntry] = field(default_factory=dict)
    seq_num: int = 0

    def mark_unavailable(
        self, placement: str, *, now: float, base_backoff_s: float, message: str = ""
    ) -> float:
        """Record a stockout; return the backoff chosen (base x 2^(strikes-1), capped)."""
        previous = self.entries.get(placement)
        strikes = (previous.strikes if previous else 0) + 1
        backoff_s = min(
            base_backoff_s * (2 ** (strikes - 1)), max(base_backoff_s, ICE_BACKOFF_CAP_S)
        )
        self.entries[placement] = IceEntry(until=now + backoff_s, strikes=strikes, message=message)
        self.seq_num += 1
        return float(backoff_s)

    def is_unavailable(self, placement: str, *, now: float) -> bool:
        entry = self.entries.get(placement)
        return entry is not None and now < entry.until

    def strikes(self, placement: str) -> int:
        entry = self.entries.get(placement)
        return entry.strikes if entry else 0

    def flush(self, placement: str | None = None) -> None:
        """Forget one placement's record (it grew again) or every record."""
        if placement is None:
            changed = bool(self.entries)
            self.entries.clear()
        else:
            changed = self.entries.pop(placement, None) is not None
        if changed:
            self.seq_num += 1

    def copy(self) -> IceCache:
        return IceCache(entries=dict(self.entries), seq_num=self.seq_num)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seqNum": self.seq_num,
            "entries": {
                name: {"until": e.until, "strikes": e.strikes, "message": e.message}
                for name, e in sorted(self.entries.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IceCache:
        entries = {
            name: IceEntry(
                until=float(raw["until"]),
                strikes=int(raw["strikes"]),
                message=str(raw.get("message", "")),
            )
            for name, raw in data.get("entries", {}).items()
        }
        return cls(entries=entries, seq_num=int(data.get("seqNum", 0)))
