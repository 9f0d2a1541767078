"""Per-placement hysteresis: thresholds, initial delay, cold placements, node readiness."""

from __future__ import annotations

from crossfade.engine.health import is_failed, is_stale, observe_capacity, observe_health
from crossfade.engine.observations import NodeObservation, ProbeOutcome, ProbeResult
from crossfade.engine.state import Health, PlacementState

from .builders import T0, two_placements

POLICY = two_placements(initial_delay_s=60)
PLACEMENT = POLICY.placement("a")


def probe(t: float, ok: bool = True, *, outcome: ProbeOutcome | None = None) -> ProbeResult:
    kind = outcome or (ProbeOutcome.HEALTHY if ok else ProbeOutcome.FAILING)
    return ProbeResult("a", T0 + t, kind, detail="" if ok else "HTTP 503")


def serving(ready: int = 4, total: int = 4, at: float = -1000.0) -> PlacementState:
    state = PlacementState()
    observe_capacity(
        state,
        placement=PLACEMENT,
        nodes=NodeObservation("a", T0 + at, ready, total, ready * 4),
        provider=None,
    )
    return state


def feed(state: PlacementState, probes: list[ProbeResult], now: float = 0.0) -> list[str]:
    changes = observe_health(
        state, name="a", policy=POLICY, probes=probes, carries_traffic=True, now=T0 + now
    )
    return [c.reason for c in changes]


def test_failure_threshold_is_consecutive() -> None:
    state = serving()
    assert feed(state, [probe(0), probe(10)]) == ["Healthy"]
    assert feed(state, [probe(20, False), probe(30, False), probe(40), probe(50, False)]) == []
    assert state.health is Health.HEALTHY
    assert feed(state, [probe(60, False), probe(70, False)]) == ["ProbeFailures"]
    assert state.health is Health.UNHEALTHY
    assert state.unhealthy_since == T0 + 70
    assert "3 consecutive failed probes" in state.message and "HTTP 503" in state.message


def test_success_threshold_to_recover() -> None:
    state = serving()
    feed(state, [probe(0, False), probe(10, False), probe(20, False)])
    assert state.health is Health.UNHEALTHY
    assert feed(state, [probe(30)]) == []
    assert feed(state, [probe(40)]) == ["Healthy"]
    assert state.healthy_since == T0 + 40


def test_same_probe_counts_once() -> None:
    state = serving()
    failing = probe(0, False)
    for _ in range(5):
        feed(state, [failing])
    assert state.consecutive_failures == 1


def test_initial_delay_ignores_failures_after_nodes_become_ready() -> None:
    state = serving(at=0.0)  # nodes just became ready at T0
    feed(state, [probe(t, False) for t in (10, 20, 30, 40, 50)])
    assert state.health is Health.UNKNOWN
    assert feed(state, [probe(60, False), probe(70, False), probe(80, False)]) == ["ProbeFailures"]


def test_cold_placement_is_unknown_not_unhealthy() -> None:
    state = serving(ready=0, total=0)
    assert feed(state, [probe(t, False) for t in (0, 10, 20, 30)]) == []
    assert state.health is Health.UNKNOWN
    assert state.reason == "NoNodes"


def test_lost_nodes_make_a_healthy_placement_unhealthy_at_once() -> None:
    state = serving()
    feed(state, [probe(0), probe(10)])
    observe_capacity(
        state, placement=PLACEMENT, nodes=NodeObservation("a", T0 + 20, 1, 4, 4), provider=None
    )
    assert feed(state, [], now=20) == ["NodesNotReady"]
    assert "1/4 nodes ready" in state.message


def test_booting_nodes_do_not_count_as_failure() -> None:
    state = serving(ready=0, total=2)  # registered, not ready yet, never served
    assert feed(state, []) == []
    assert state.health is Health.UNKNOWN


def test_overloaded_is_alive() -> None:
    state = serving()
    feed(
        state,
        [probe(0, outcome=ProbeOutcome.OVERLOADED), probe(10, outcome=ProbeOutcome.OVERLOADED)],
    )
    assert state.health is Health.HEALTHY
    assert state.reason == "Overloaded"


def test_failed_needs_toleration_and_stale_needs_silence() -> None:
    state = serving()
    feed(state, [probe(0, False), probe(10, False), probe(20, False)])
    assert not is_failed(state, policy=POLICY, now=T0 + 20 + POLICY.toleration_s - 1)
    assert is_failed(state, policy=POLICY, now=T0 + 20 + POLICY.toleration_s)
    assert not is_stale(state, policy=POLICY, now=T0 + 20 + 3 * POLICY.period_s)
    assert is_stale(state, policy=POLICY, now=T0 + 21 + 3 * POLICY.period_s)
