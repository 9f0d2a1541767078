"""At steady state the built status equals what the apiserver stored, CRD defaults included."""

from __future__ import annotations

from crossfade.api.status import PlacementStatus
from crossfade.handlers.status import placement_summaries, status_patch

STATE = {
    "placements": {
        "aws": {"health": "Healthy", "reason": "Healthy", "desired": 2, "readyNodes": 2},
        "gke": {"health": "Healthy", "reason": "Healthy", "desired": 1, "readyNodes": 1},
    }
}


def as_the_server_stores(item: dict[str, object]) -> dict[str, object]:
    """Round-trip through the status model: the CRD's schema defaults filled in."""
    model = PlacementStatus.model_validate(item)
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_unchanged_placements_give_an_empty_patch() -> None:
    built = placement_summaries(names=["aws", "gke"], state=STATE, weights={"aws": 100, "gke": 0})
    stored = {"placements": [as_the_server_stores(item) for item in built]}
    assert all("consecutiveFailures" in item for item in stored["placements"])
    assert status_patch(stored, {"placements": built}) == {}
