"""InferencePoolSpec: placements plus pool-wide policy, with the cross-field rules."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar, Self

from pydantic import Field, model_validator

from crossfade.api.base import ApiModel, CelRule
from crossfade.api.constants import MAX_PLACEMENTS
from crossfade.api.fields import DeletionPolicy, Role, TrafficMode
from crossfade.api.placement import Placement
from crossfade.api.policy import MAX_ACCELERATORS, Failover, HealthCheck, Traffic


def _detection_window_s(spec: InferencePoolSpec) -> int:
    inference = spec.health_check.inference
    return inference.period_seconds * inference.failure_threshold + spec.failover.toleration_seconds


def _route53_names_known(spec: InferencePoolSpec) -> bool:
    route53 = spec.traffic.route53
    names = {p.name for p in spec.placements}
    return route53 is None or all(r.placement in names for r in route53.records)


def _route53_covers_placements(spec: InferencePoolSpec) -> bool:
    route53 = spec.traffic.route53
    return route53 is None or {p.name for p in spec.placements} <= {
        r.placement for r in route53.records
    }


class InferencePoolSpec(ApiModel):
    """Desired state: where the model may run, how to judge health, which traffic to steer."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.placements.all(p, self.placements.exists_one(q, q.priority == p.priority))",
            message="placements[].priority must be unique: give each placement a different "
            "priority (higher is preferred)",
            check=lambda s: len({p.priority for p in s.placements}) == len(s.placements),
            field_path=".placements",
        ),
        CelRule(
            rule="self.placements.exists_one(p, p.role == 'Primary')",
            message="exactly one placement must have role Primary: set role: Primary on the "
            "preferred placement and role: Standby on the others",
            check=lambda s: sum(p.role == Role.PRIMARY for p in s.placements) == 1,
            field_path=".placements",
        ),
        CelRule(
            rule="!has(self.traffic.gatewayAPI) || self.placements.all(p, has(p.backendRef))",
            message="every placement needs backendRef when traffic.gatewayAPI is set: add "
            "placements[].backendRef naming the Service or InferencePool it serves",
            check=lambda s: (
                s.traffic.gateway_api is None
                or all(p.backend_ref is not None for p in s.placements)
            ),
            field_path=".placements",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="!has(self.traffic.route53) || self.traffic.route53.records.all(r, "
            "self.placements.exists(p, p.name == r.placement))",
            message="traffic.route53.records[].placement must name a placement in "
            "spec.placements: fix the name or remove the record",
            check=_route53_names_known,
            field_path=".traffic.route53.records",
            reason="FieldValueInvalid",
        ),
        CelRule(
            rule="!has(self.traffic.route53) || self.placements.all(p, "
            "self.traffic.route53.records.exists(r, r.placement == p.name))",
            message="traffic.route53.records needs one record per placement: add a record "
            "for every name in spec.placements",
            check=_route53_covers_placements,
            field_path=".traffic.route53.records",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.traffic.mode != 'Weighted' || "
            "self.placements.exists(p, !has(p.weight) || p.weight > 0)",
            message="placements[].weight must not all be 0 in Weighted mode: give at least "
            "one placement a positive weight",
            check=lambda s: (
                s.traffic.mode != TrafficMode.WEIGHTED
                or any(p.weight is None or p.weight > 0 for p in s.placements)
            ),
            field_path=".placements",
        ),
        CelRule(
            rule="!has(self.failover) || !has(self.healthCheck) || "
            "!has(self.healthCheck.inference) || self.failover.failbackDelaySeconds > "
            "self.healthCheck.inference.periodSeconds * "
            "self.healthCheck.inference.failureThreshold + self.failover.tolerationSeconds",
            message="failover.failbackDelaySeconds must exceed the detection window "
            "(healthCheck.inference.periodSeconds x failureThreshold + "
            "failover.tolerationSeconds): raise failbackDelaySeconds",
            check=lambda s: s.failover.failback_delay_seconds > _detection_window_s(s),
            field_path=".failover.failbackDelaySeconds",
        ),
    )

    placements: list[Placement] = Field(
        min_length=1,
        max_length=MAX_PLACEMENTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Where the model may run, 1 to 8 placements keyed by name.",
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck,
        json_schema_extra={"default": HealthCheck().to_wire()},
        description="How to tell that a placement is healthy.",
    )
    traffic: Traffic = Field(description="Which traffic layer(s) to steer; at least one.")
    failover: Failover = Field(
        default_factory=Failover,
        json_schema_extra={"default": Failover().to_wire()},
        description="Failover and failback timing, flap guard, capacity backoff.",
    )
    paused: bool = Field(
        default=False,
        description="Freeze all actions (no scaling, no traffic changes); status still updates.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description="On deletion: Retain capacity and weights as they are, ScaleToMin every "
        "placement before the finalizer is removed, or Delete: move traffic to a placement "
        "that stays, ScaleToMin the others and delete the node groups crossfade created from "
        "this pool's templates (never any other; the orphan reaper deletes those left behind "
        "after the grace period).",
    )
    demand_accelerators: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ACCELERATORS,
        description="Accelerators the workload needs; absent = the preferred placement's "
        "full size (nodes.max x accelerator.perNode).",
    )

    @model_validator(mode="after")
    def _unique_list_map_keys(self) -> Self:
        # The apiserver enforces list-map keys itself (no CEL rule needed); mirror it here.
        duplicates = sorted(n for n, c in Counter(p.name for p in self.placements).items() if c > 1)
        if duplicates:
            raise ValueError(f"placements: duplicate name(s) {', '.join(duplicates)}")
        if self.traffic.route53 is not None:
            keys = Counter(r.placement for r in self.traffic.route53.records)
            repeated = sorted(n for n, c in keys.items() if c > 1)
            if repeated:
                raise ValueError(
                    f"traffic.route53.records: duplicate placement(s) {', '.join(repeated)}"
                )
        return self
