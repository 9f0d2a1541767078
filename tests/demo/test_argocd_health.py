"""docs/argocd-health.lua, run by a real Lua 5.1 interpreter (lupa), as Argo CD runs it."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.engine.plan import ConditionType
from crossfade.testing.controlplane import REPO_ROOT

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (a Lua interpreter) is not installed")

SCRIPT = (REPO_ROOT / "docs" / "argocd-health.lua").read_text()
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script the way Argo CD does: ``obj`` global, the returned table is the answer."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


def cond(kind: ConditionType, status: str, reason: str, message: str = "m") -> dict[str, str]:
    return {"type": str(kind), "status": status, "reason": reason, "message": message}


def pool(*conditions: dict[str, str], paused: bool = False, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "crossfade.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "llm", "generation": generation},
        "spec": {"paused": paused, "placements": [{"name": "a"}]},
        "status": {"observedGeneration": 1, "conditions": list(conditions)},
    }


SERVING = cond(ConditionType.READY, "True", "Serving", "serving from aws")
STEADY = cond(ConditionType.FAILING_OVER, "False", "Steady")
ALL_HEALTHY = cond(ConditionType.DEGRADED, "False", "AllHealthy")
NOT_STATIC = cond(ConditionType.FAIL_STATIC, "False", "ObservationsUsable")


@pytest.mark.parametrize(
    ("obj", "expected", "in_message"),
    [
        (
            {"kind": "InferencePool", "metadata": {"generation": 1}, "spec": {}},
            "Progressing",
            "waiting",
        ),
        (pool(SERVING, generation=2), "Progressing", "generation 2"),
        (
            pool(cond(ConditionType.READY, "False", "InvalidSpec", "bad priority")),
            "Degraded",
            "invalid spec: bad priority",
        ),
        (pool(SERVING, paused=True), "Suspended", "paused"),
        (
            pool(
                cond(ConditionType.READY, "False", "NoReadyCapacity"),
                cond(ConditionType.FAIL_STATIC, "True", "NoReadyCapacity", "holding 100/0"),
            ),
            "Degraded",
            "fail-static, NoReadyCapacity: holding 100/0",
        ),
        (pool(cond(ConditionType.READY, "Unknown", "Pending")), "Progressing", "not known"),
        (
            pool(cond(ConditionType.READY, "False", "NotServing", "nothing")),
            "Degraded",
            "not serving",
        ),
        (
            pool(
                SERVING,
                cond(ConditionType.FAILING_OVER, "True", "ProbeFailures", "from aws to gke"),
                cond(ConditionType.DEGRADED, "True", "PlacementUnhealthy"),
            ),
            "Progressing",
            "shifting traffic, ProbeFailures: from aws to gke",
        ),
        (
            pool(
                SERVING,
                STEADY,
                NOT_STATIC,
                cond(ConditionType.DEGRADED, "True", "PlacementUnhealthy", "aws NodesNotReady"),
                cond(ConditionType.FAILED_OVER, "True", "ServingFromFallback"),
            ),
            "Degraded",
            "serving, but PlacementUnhealthy: aws NodesNotReady",
        ),
        (
            pool(
                SERVING,
                STEADY,
                ALL_HEALTHY,
                NOT_STATIC,
                cond(ConditionType.FAILED_OVER, "True", "ServingFromFallback", "most on gke"),
            ),
            "Healthy",
            "fallback",
        ),
        (pool(SERVING, STEADY, ALL_HEALTHY, NOT_STATIC), "Healthy", "Serving: serving from aws"),
    ],
)
def test_health_mapping(obj: dict[str, Any], expected: str, in_message: str) -> None:
    status, message = health(obj)
    assert status in ARGO_STATUSES
    assert (status, in_message in message) == (expected, True), message
