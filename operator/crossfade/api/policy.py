"""Pool-wide policy: health checks, traffic layers and failover timing."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import Field

from crossfade.api.base import ApiModel, CelRule
from crossfade.api.constants import (
    BODY_MAX_CHARS,
    DNS_SUBDOMAIN_MAX_CHARS,
    MAX_PLACEMENTS,
    MAX_ROUTE53_VALUES,
    MAX_RULE_NAMES,
    PATH_MAX_CHARS,
    ROUTE53_MAX_TTL_S,
    ROUTE53_MAX_WEIGHT,
)
from crossfade.api.fields import (
    DnsLabel,
    DnsSubdomain,
    DriftPolicy,
    HttpMethod,
    Route53RecordType,
    TrafficMode,
)

MAX_PERIOD_S = 3600
MAX_PROBE_TIMEOUT_S = 600
MAX_THRESHOLD = 100
MAX_INITIAL_DELAY_S = 3600
MAX_OVERLOADED_LATENCY_MS = 600_000
MAX_ACCELERATORS = 100_000
MAX_TOLERATION_S = 3600
MAX_FAILBACK_DELAY_S = 86_400
MAX_WARM_STANDBY_NODES = 1000
MAX_FAILOVERS_PER_HOUR = 60
MAX_ICE_BACKOFF_S = 86_400
SET_IDENTIFIER_MAX_CHARS = 128
HOSTED_ZONE_ID_PATTERN = r"^[A-Z0-9]{1,32}$"
RECORD_NAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?$"
IPV4_PATTERN = r"^[0-9]{1,3}([.][0-9]{1,3}){3}$"
RECORD_VALUE_PATTERN = r"^[A-Za-z0-9.:_*-]+$"
PROBE_PATH_PATTERN = r"^/[^\s]*$"


class SecretRef(ApiModel):
    """A Secret in the pool's namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret.")


class InferenceCheck(ApiModel):
    """The inference probe: what a user would ask, how often, and when to believe it."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.timeoutSeconds <= self.periodSeconds * self.failureThreshold",
            message="healthCheck.inference.timeoutSeconds must not exceed periodSeconds x "
            "failureThreshold: lower timeoutSeconds or raise periodSeconds",
            check=lambda c: c.timeout_seconds <= c.period_seconds * c.failure_threshold,
            field_path=".timeoutSeconds",
        ),
        CelRule(
            rule="self.method != 'POST' || has(self.body)",
            message="healthCheck.inference.body is required when method is POST: add a tiny "
            'completion request, e.g. {"model":"m","prompt":"hi","max_tokens":1}',
            check=lambda c: c.method != HttpMethod.POST or c.body is not None,
            field_path=".body",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.method == 'POST' || !has(self.body)",
            message="healthCheck.inference.body is sent only with method POST: "
            "set method: POST or remove body",
            check=lambda c: c.method == HttpMethod.POST or c.body is None,
            field_path=".body",
            reason="FieldValueForbidden",
        ),
    )

    path: str = Field(
        default="/v1/models",
        min_length=1,
        max_length=PATH_MAX_CHARS,
        pattern=PROBE_PATH_PATTERN,
        description="Path appended to each placement's endpoint.url.",
    )
    method: HttpMethod = Field(default=HttpMethod.GET, description="HTTP method of the probe.")
    body: str | None = Field(
        default=None,
        min_length=1,
        max_length=BODY_MAX_CHARS,
        description="JSON request body for POST, e.g. a one-token completion.",
    )
    expected_status: int = Field(
        default=200, ge=100, le=599, description="HTTP status a healthy endpoint answers."
    )
    period_seconds: int = Field(default=10, ge=1, le=MAX_PERIOD_S, description="Probe interval.")
    timeout_seconds: int = Field(
        default=5, ge=1, le=MAX_PROBE_TIMEOUT_S, description="Deadline of one probe."
    )
    failure_threshold: int = Field(
        default=3,
        ge=1,
        le=MAX_THRESHOLD,
        description="Consecutive failed probes before a placement counts as unhealthy.",
    )
    success_threshold: int = Field(
        default=2,
        ge=1,
        le=MAX_THRESHOLD,
        description="Consecutive good probes before an unhealthy placement counts as healthy.",
    )
    initial_delay_seconds: int = Field(
        default=60,
        ge=0,
        le=MAX_INITIAL_DELAY_S,
        description="Grace period after a placement's nodes become ready before probing counts.",
    )
    overloaded_latency_milliseconds: int = Field(
        default=2000,
        ge=1,
        le=MAX_OVERLOADED_LATENCY_MS,
        description="A successful answer slower than this counts as overloaded.",
    )
    headers_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose keys are header names and values header values "
        "(e.g. Authorization); values never reach logs or status.",
    )


class NodeCheck(ApiModel):
    """Node health read from the cluster the placement's nodes join."""

    min_ready_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="Percent of desired nodes that must be Ready for the placement to count.",
    )
    min_allocatable_accelerators: int = Field(
        default=0,
        ge=0,
        le=MAX_ACCELERATORS,
        description="Fewest allocatable accelerators on Ready nodes for the placement to count.",
    )


class HealthCheck(ApiModel):
    """How crossfade tells that a placement is healthy."""

    inference: InferenceCheck = Field(
        default_factory=InferenceCheck,
        json_schema_extra={"default": InferenceCheck().to_wire()},
        description="Inference probe against each placement's endpoint.",
    )
    nodes: NodeCheck = Field(
        default_factory=NodeCheck,
        json_schema_extra={"default": NodeCheck().to_wire()},
        description="Node readiness and allocatable accelerators.",
    )


class HTTPRouteRef(ApiModel):
    """Reference to a Gateway API HTTPRoute."""

    name: DnsSubdomain = Field(description="Name of the HTTPRoute.")
    namespace: DnsLabel | None = Field(
        default=None, description="Namespace of the HTTPRoute; absent = the pool's namespace."
    )


class GatewayAPITraffic(ApiModel):
    """Steer traffic by setting backendRef weights in an HTTPRoute."""

    http_route_ref: HTTPRouteRef = Field(description="The HTTPRoute whose weights crossfade owns.")
    rule_names: list[DnsLabel] | None = Field(
        default=None,
        max_length=MAX_RULE_NAMES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Only rules with these names (Gateway API rule `name`) are changed; "
        "absent = every rule referencing a placement's backendRef.",
    )
    drift_policy: DriftPolicy = Field(
        default=DriftPolicy.REASSERT,
        description="When someone else changes the weights: Reassert ours, or BackOff "
        "and report TrafficSynced=False.",
    )


RecordValue = Annotated[
    str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_CHARS, pattern=RECORD_VALUE_PATTERN)
]


class Route53Record(ApiModel):
    """The weighted record crossfade keeps for one placement."""

    placement: DnsLabel = Field(description="Name of the placement this record sends traffic to.")
    set_identifier: str | None = Field(
        default=None,
        min_length=1,
        max_length=SET_IDENTIFIER_MAX_CHARS,
        description="Route 53 SetIdentifier; absent = the placement name.",
    )
    values: list[RecordValue] = Field(
        min_length=1,
        max_length=MAX_ROUTE53_VALUES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Record values: IP addresses for A/AAAA, one host name for CNAME.",
    )


def _all_ipv4(values: list[str]) -> bool:
    return all(re.fullmatch(IPV4_PATTERN, value) for value in values)


class Route53Traffic(ApiModel):
    """Steer traffic with Route 53 weighted records (one per placement)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.type != 'CNAME' || self.records.all(r, r.values.size() == 1)",
            message="traffic.route53.records[].values must hold exactly one host name when "
            "type is CNAME: keep one value or use type A/AAAA",
            check=lambda t: (
                t.type != Route53RecordType.CNAME or all(len(r.values) == 1 for r in t.records)
            ),
            field_path=".records",
        ),
        CelRule(
            rule="self.type != 'A' || self.records.all(r, r.values.all(v, "
            f"v.matches('{IPV4_PATTERN}')))",
            message="traffic.route53.records[].values must be IPv4 addresses when type is A: "
            "fix the values or use type CNAME for host names",
            check=lambda t: (
                t.type != Route53RecordType.A or all(_all_ipv4(r.values) for r in t.records)
            ),
            field_path=".records",
        ),
    )

    hosted_zone_id: str = Field(
        min_length=1,
        max_length=32,
        pattern=HOSTED_ZONE_ID_PATTERN,
        description="Route 53 hosted zone ID, e.g. `Z0123456789ABCDEFGHIJ`.",
    )
    record_name: str = Field(
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=RECORD_NAME_PATTERN,
        description="DNS name clients resolve, e.g. `llm.example.com`.",
    )
    type: Route53RecordType = Field(default=Route53RecordType.CNAME, description="Record type.")
    ttl_seconds: int = Field(
        default=60,
        ge=0,
        le=ROUTE53_MAX_TTL_S,
        description="Record TTL; keep it short, clients keep stale answers this long "
        "(AWS allows 0..2147483647).",
    )
    max_weight: int = Field(
        default=ROUTE53_MAX_WEIGHT,
        ge=1,
        le=ROUTE53_MAX_WEIGHT,
        description="Route 53 weight written for a placement carrying all traffic; "
        "crossfade scales its percentages onto 0..maxWeight (AWS allows 0..255).",
    )
    records: list[Route53Record] = Field(
        min_length=1,
        max_length=MAX_PLACEMENTS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["placement"],
        },
        description="One weighted record per placement.",
    )


class Traffic(ApiModel):
    """Which traffic layer(s) crossfade steers, and how."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="has(self.gatewayAPI) || has(self.route53)",
            message="traffic needs at least one layer: set traffic.gatewayAPI "
            "(HTTPRoute weights) or traffic.route53 (weighted DNS records)",
            check=lambda t: t.gateway_api is not None or t.route53 is not None,
            reason="FieldValueRequired",
        ),
    )

    mode: TrafficMode = Field(
        default=TrafficMode.ACTIVE_PASSIVE,
        description="ActivePassive: all traffic on the best healthy placement; Weighted: "
        "shares from placements[].weight; CapacityProportional: shares follow ready capacity.",
    )
    gateway_api: GatewayAPITraffic | None = Field(
        default=None, alias="gatewayAPI", description="Gateway API HTTPRoute weights."
    )
    route53: Route53Traffic | None = Field(default=None, description="Route 53 weighted records.")
    step_percent: int = Field(
        default=25,
        ge=1,
        le=100,
        description="Percent of traffic moved per step while shifting (100 = all at once).",
    )


class Failover(ApiModel):
    """When and how fast crossfade moves traffic away and back."""

    automatic: bool = Field(
        default=True, description="false = observe and report only, never scale or shift."
    )
    toleration_seconds: int = Field(
        default=30,
        ge=0,
        le=MAX_TOLERATION_S,
        description="How long a placement may stay unhealthy before traffic leaves it.",
    )
    failback_delay_seconds: int = Field(
        default=600,
        ge=0,
        le=MAX_FAILBACK_DELAY_S,
        description="How long a preferred placement must stay healthy before traffic returns; "
        "must exceed the detection window (periodSeconds x failureThreshold + "
        "tolerationSeconds).",
    )
    warm_standby_nodes: int = Field(
        default=1,
        ge=0,
        le=MAX_WARM_STANDBY_NODES,
        description="Nodes kept running on each standby placement (within its nodes bounds).",
    )
    max_failovers_per_hour: int = Field(
        default=4,
        ge=1,
        le=MAX_FAILOVERS_PER_HOUR,
        description=(
            "Flap guard: traffic transitions (failovers plus failbacks) allowed per hour. "
            "Failover away from an unhealthy placement is never held; a failback is held "
            "while it and the failover that may follow would exceed this count."
        ),
    )
    insufficient_capacity_backoff_seconds: int = Field(
        default=300,
        ge=1,
        le=MAX_ICE_BACKOFF_S,
        description="After a cloud reports insufficient capacity, wait this long before "
        "asking that placement again.",
    )
