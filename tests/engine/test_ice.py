"""ICE cache: exponential backoff with a cap, flush, sequence numbers, JSON round trip."""

from __future__ import annotations

import json

from crossfade.engine.ice import ICE_BACKOFF_CAP_S, IceCache


def test_marks_and_expires() -> None:
    cache = IceCache()
    backoff = cache.mark_unavailable("b", now=1000.0, base_backoff_s=300)
    assert backoff == 300
    assert cache.is_unavailable("b", now=1299.0)
    assert not cache.is_unavailable("b", now=1300.0)
    assert not cache.is_unavailable("a", now=1000.0)


def test_backoff_doubles_per_strike_up_to_the_cap() -> None:
    cache = IceCache()
    seen = [cache.mark_unavailable("b", now=0.0, base_backoff_s=300) for _ in range(8)]
    assert seen[:5] == [300, 600, 1200, 2400, ICE_BACKOFF_CAP_S]
    assert max(seen) == ICE_BACKOFF_CAP_S
    assert cache.strikes("b") == 8


def test_cap_never_below_base() -> None:
    cache = IceCache()
    assert cache.mark_unavailable("b", now=0.0, base_backoff_s=7200) == 7200


def test_flush_resets_strikes_and_bumps_seq_num() -> None:
    cache = IceCache()
    cache.mark_unavailable("b", now=0.0, base_backoff_s=300)
    seq = cache.seq_num
    cache.flush("b")
    assert cache.strikes("b") == 0
    assert cache.seq_num == seq + 1
    cache.flush("b")  # nothing to forget: no change
    assert cache.seq_num == seq + 1
    assert cache.mark_unavailable("b", now=0.0, base_backoff_s=300) == 300


def test_json_round_trip_and_copy_independence() -> None:
    cache = IceCache()
    cache.mark_unavailable("b", now=10.0, base_backoff_s=60, message="no g5 in us-east-1a")
    restored = IceCache.from_dict(json.loads(json.dumps(cache.to_dict())))
    assert restored == cache
    clone = cache.copy()
    clone.flush()
    assert cache.is_unavailable("b", now=11.0)
