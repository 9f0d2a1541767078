"""No-op router: observe-only pools (and pools without a traffic layer) write nothing."""

from __future__ import annotations

from collections.abc import Mapping

from crossfade.routers.base import (
    ApplyResult,
    RouteReading,
    TrafficRouter,
    to_crossfade_scale,
    validate_weights,
)


class NoopRouter:
    """Remembers the weights a plan asked for without writing them anywhere.

    With ``observed`` set, ``read`` reports what that real router sees, so an observe-only
    pool still shows the layer's actual weights and drift; ``apply`` never calls it.
    """

    def __init__(
        self, *, placements: frozenset[str], observed: TrafficRouter | None = None
    ) -> None:
        self._placements = placements
        self._observed = observed
        self._weights: dict[str, int] | None = None

    @property
    def name(self) -> str:
        return f"observe-only/{self._observed.name}" if self._observed else "noop"

    async def read(self) -> RouteReading:
        if self._observed is not None:
            return await self._observed.read()
        if self._weights is None:
            return RouteReading(
                weights=None,
                accepted=None,
                drift=False,
                message="no traffic layer configured; nothing applied yet",
                reason="NoTrafficLayer",
            )
        return RouteReading(
            weights=to_crossfade_scale(self._weights),
            accepted=True,
            drift=False,
            message="no traffic layer configured; weights are recorded only",
            reason="NoTrafficLayer",
            layer_weights=dict(self._weights),
        )

    async def apply(self, weights: Mapping[str, int]) -> ApplyResult:
        wanted = validate_weights(weights, placements=self._placements)
        changed = wanted != self._weights
        self._weights = wanted
        return ApplyResult(
            weights=dict(wanted),
            layer_weights=dict(wanted),
            changed=changed,
            writes=0,
            reason="ObserveOnly",
            message=f"{self.name}: weights {wanted} recorded, not written",
        )
