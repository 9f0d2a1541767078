"""Lease expiry, as the standby judges the holder."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

from crossfade.handlers.leadership import LEASE_DURATION_S, lease_expired

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def lease(holder: str | None, renewed: datetime.datetime | None) -> SimpleNamespace:
    return SimpleNamespace(
        spec=SimpleNamespace(
            holder_identity=holder,
            renew_time=renewed,
            acquire_time=None,
            lease_duration_seconds=LEASE_DURATION_S,
        )
    )


def test_fresh_lease_is_held() -> None:
    assert not lease_expired(lease("a", NOW - datetime.timedelta(seconds=3)), now=NOW)


def test_stale_or_empty_lease_is_free() -> None:
    stale = NOW - datetime.timedelta(seconds=LEASE_DURATION_S + 1)
    assert lease_expired(lease("a", stale), now=NOW)
    assert lease_expired(lease(None, NOW), now=NOW)
    assert lease_expired(lease("a", None), now=NOW)


def test_naive_renew_time_is_read_as_utc() -> None:
    naive = (NOW - datetime.timedelta(seconds=2)).replace(tzinfo=None)
    assert not lease_expired(lease("a", naive), now=NOW)
