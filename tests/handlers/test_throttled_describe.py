"""A throttled describe is "no fresh observation": steady-state passes write nothing.

The cloud observer is the real ``CloudProbe`` over a fake node group whose describe is
refused every other pass, by crossfade's own token bucket (``ClientRateLimited``, never
sent) or by the cloud (``ThrottlingException``). Neither may change status or the durable
engine state while the last answer is young; a throttle that outlasts it is reported.
"""

from __future__ import annotations

import dataclasses

from crossfade.engine.observations import ProviderErrorKind
from crossfade.handlers.reconcile import STATE_ANNOTATION
from crossfade.probes.breaker import BreakerState, CircuitBreaker
from crossfade.probes.cloud import CloudProbe
from crossfade.providers.base import NodeGroupState
from crossfade.providers.errors import ProviderError, Throttled

from .fakes import FakeNodeGroup
from .test_reconcile import Harness

CLIENT_REFUSAL = Throttled("token bucket empty", code="ClientRateLimited")
CLOUD_THROTTLE = Throttled("Rate exceeded", code="ThrottlingException")
SETTLE_PASSES = 10
ALTERNATING_PASSES = 20


@dataclasses.dataclass
class EveryOtherDescribeRefused:
    """Describes a fake node group, refusing every other call once ``refusal`` is set."""

    group: FakeNodeGroup
    refusal: ProviderError | None = None
    always: bool = False  # refuse every call, not every other one
    calls: int = 0

    async def describe(self) -> NodeGroupState:
        self.calls += 1
        if self.refusal is not None and (self.always or self.calls % 2 == 0):
            raise self.refusal
        return await self.group.describe()


class ProbedHarness(Harness):
    """The reconcile harness with each placement's cloud read through a real CloudProbe."""

    def __init__(self, *, stale_after_s: float = 90.0) -> None:
        super().__init__()
        self.describers = {
            "aws": EveryOtherDescribeRefused(self.aws_group),
            "gke": EveryOtherDescribeRefused(self.gke_group),
        }
        self.breakers = {name: CircuitBreaker(clock=self.now) for name in self.describers}
        observers = []
        for item in self.runtime.observers:
            probe = CloudProbe(
                placement=item.placement,
                provider=self.describers[item.placement],
                breaker=self.breakers[item.placement],
                stale_after_s=stale_after_s,
                wall_clock=self.now,
            )
            observers.append(dataclasses.replace(item, cloud=probe.observe))
        self.runtime.observers = observers

    def now(self) -> float:
        return self.clock[0]

    def refuse_every_other_describe(self, refusal: ProviderError, *, always: bool = False) -> None:
        for describer in self.describers.values():
            describer.refusal, describer.always = refusal, always

    def placement_status(self, name: str) -> dict[str, object]:
        for item in self.body["status"]["placements"]:
            if item["name"] == name:
                return dict(item)
        raise AssertionError(f"no status for placement {name}")


async def assert_no_writes_while_every_other_describe_is_refused(refusal: Throttled) -> None:
    h = ProbedHarness()
    await h.run(SETTLE_PASSES)
    assert h.weights == {"aws": 100, "gke": 0}
    writes = (h.status_writes, h.annotation_writes)
    state = h.body["metadata"]["annotations"][STATE_ANNOTATION]
    h.refuse_every_other_describe(refusal)
    await h.run(ALTERNATING_PASSES)
    refused = sum(d.calls for d in h.describers.values()) // 2
    assert refused >= ALTERNATING_PASSES // 2  # the refusals really happened
    assert (h.status_writes, h.annotation_writes) == writes
    assert h.body["metadata"]["annotations"][STATE_ANNOTATION] == state
    assert "providerError" not in h.placement_status("aws")


async def test_client_side_refusals_write_nothing_at_steady_state() -> None:
    await assert_no_writes_while_every_other_describe_is_refused(CLIENT_REFUSAL)


async def test_cloud_throttles_every_other_pass_write_nothing_at_steady_state() -> None:
    await assert_no_writes_while_every_other_describe_is_refused(CLOUD_THROTTLE)


async def test_client_side_refusals_leave_the_breaker_closed() -> None:
    h = ProbedHarness()
    await h.run(SETTLE_PASSES)
    h.refuse_every_other_describe(CLIENT_REFUSAL, always=True)
    await h.run(ALTERNATING_PASSES)
    assert h.breakers["aws"].state is BreakerState.CLOSED
    assert h.breakers["aws"].snapshot().consecutive_failures == 0


async def test_a_throttle_that_outlasts_the_last_answer_is_reported() -> None:
    h = ProbedHarness(stale_after_s=5.0)
    await h.run(SETTLE_PASSES)
    h.refuse_every_other_describe(CLOUD_THROTTLE, always=True)
    await h.run(3)
    assert "providerError" not in h.placement_status("aws")  # 3 s old: the answer stands
    await h.run(5)
    # Throttled, or the open breaker's ProviderUnavailable once enough throttles piled up.
    assert h.placement_status("aws").get("providerError") in {
        ProviderErrorKind.THROTTLED.value,
        "ProviderUnavailable",
    }
