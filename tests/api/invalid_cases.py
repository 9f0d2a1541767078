"""Invalid InferencePools: each one edit of a valid pool, and where and how it must be rejected."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.api.edits import DELETE, edit
from tests.api.samples import CAPI_TEMPLATED_PLACEMENT, ROUTE53, base_pool


@dataclass(frozen=True)
class InvalidCase:
    """One invalid object.

    ``api_path``/``api_text`` must appear in the apiserver's message; ``py_path`` is the path
    parse_pool reports (same as the apiserver's unless the rule lives elsewhere in Python).
    """

    id: str
    edits: tuple[tuple[str, Any], ...]
    api_path: str
    api_text: str
    py_path: str = ""
    base_edits: tuple[tuple[str, Any], ...] = field(default=())

    def body(self) -> dict[str, Any]:
        body = base_pool(f"invalid-{self.id}")
        for path, value in (*self.base_edits, *self.edits):
            edit(body, path, value if value is DELETE else copy.deepcopy(value))
        return body

    @property
    def python_path(self) -> str:
        return self.py_path or self.api_path


P0 = "spec.placements[0]"
P1 = "spec.placements[1]"
WITH_ROUTE53 = (("spec.traffic.route53", ROUTE53),)
WITH_CAPI_TEMPLATE = ((P1, CAPI_TEMPLATED_PLACEMENT),)
CAPI1 = f"{P1}.provider.clusterAPI"
GKE_MEMBER = {"project": "my-project", "location": "europe-west4", "cluster": "c", "nodePool": "n"}
NINE_PLACEMENTS = [
    {
        "name": f"p{i}",
        "priority": i,
        "role": "Primary" if i == 0 else "Standby",
        "provider": {
            "type": "EKSNodeGroup",
            "eksNodeGroup": {"region": "us-east-1", "cluster": "c", "nodegroup": f"g{i}"},
        },
        "nodes": {"max": 1},
        "backendRef": {"name": f"s{i}", "port": 80},
    }
    for i in range(9)
]

INVALID_CASES: tuple[InvalidCase, ...] = (
    InvalidCase(
        "nodes-min-above-max",
        ((f"{P0}.nodes", {"min": 5, "max": 4}),),
        f"{P0}.nodes.min",
        "nodes.min must not exceed nodes.max",
    ),
    InvalidCase(
        "duplicate-priority",
        ((f"{P1}.priority", 100),),
        "spec.placements",
        "priority must be unique",
    ),
    InvalidCase(
        "two-primaries",
        ((f"{P1}.role", "Primary"),),
        "spec.placements",
        "exactly one placement must have role Primary",
    ),
    InvalidCase(
        "no-primary",
        ((f"{P0}.role", "Standby"),),
        "spec.placements",
        "exactly one placement must have role Primary",
    ),
    InvalidCase(
        "provider-member-does-not-match-type",
        ((f"{P0}.provider", {"type": "EKSNodeGroup", "gkeNodePool": GKE_MEMBER}),),
        f"{P0}.provider.eksNodeGroup",
        "needs provider.eksNodeGroup",
    ),
    InvalidCase(
        "provider-two-members",
        (
            (
                f"{P1}.provider.eksNodeGroup",
                {"region": "us-east-1", "cluster": "c", "nodegroup": "g"},
            ),
        ),
        f"{P1}.provider",
        "exactly one member",
    ),
    InvalidCase(
        "unknown-provider-type",
        ((f"{P0}.provider.type", "AKSNodePool"),),
        f"{P0}.provider.type",
        "Unsupported value",
    ),
    InvalidCase(
        "failback-not-longer-than-detection",
        (("spec.failover", {"failbackDelaySeconds": 60}),),
        "spec.failover.failbackDelaySeconds",
        "must exceed the detection window",
    ),
    InvalidCase(
        "timeout-above-period-times-threshold",
        (
            (
                "spec.healthCheck",
                {"inference": {"periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 5}},
            ),
        ),
        "spec.healthCheck.inference.timeoutSeconds",
        "lower timeoutSeconds or raise periodSeconds",
    ),
    InvalidCase(
        "post-without-body",
        (("spec.healthCheck", {"inference": {"method": "POST", "path": "/v1/completions"}}),),
        "spec.healthCheck.inference.body",
        "body is required when method is POST",
    ),
    InvalidCase(
        "body-with-get",
        (("spec.healthCheck", {"inference": {"body": "{}"}}),),
        "spec.healthCheck.inference.body",
        "set method: POST or remove body",
    ),
    InvalidCase(
        "no-traffic-layer",
        (("spec.traffic", {"mode": "ActivePassive"}),),
        "spec.traffic",
        "traffic needs at least one layer",
    ),
    InvalidCase(
        "route53-ttl-above-aws-limit",
        (("spec.traffic.route53.ttlSeconds", 2_147_483_648),),
        "spec.traffic.route53.ttlSeconds",
        "2147483647",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-weight-above-aws-limit",
        (("spec.traffic.route53.maxWeight", 256),),
        "spec.traffic.route53.maxWeight",
        "255",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-record-for-unknown-placement",
        (("spec.traffic.route53.records[1].placement", "azure"),),
        "spec.traffic.route53.records",
        "must name a placement in spec.placements",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-placement-without-record",
        (("spec.traffic.route53.records", [{"placement": "aws", "values": ["a.example.com"]}]),),
        "spec.traffic.route53.records",
        "one record per placement",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-cname-two-values",
        (("spec.traffic.route53.records[0].values", ["a.example.com", "b.example.com"]),),
        "spec.traffic.route53.records",
        "exactly one host name when type is CNAME",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-a-record-with-host-name",
        (("spec.traffic.route53.type", "A"),),
        "spec.traffic.route53.records",
        "must be IPv4 addresses when type is A",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "route53-bad-hosted-zone",
        (("spec.traffic.route53.hostedZoneId", "/hostedzone/z1"),),
        "spec.traffic.route53.hostedZoneId",
        "should match",
        base_edits=WITH_ROUTE53,
    ),
    InvalidCase(
        "gateway-api-without-backend-ref",
        ((f"{P1}.backendRef", DELETE),),
        "spec.placements",
        "every placement needs backendRef when traffic.gatewayAPI is set",
    ),
    InvalidCase(
        "service-backend-without-port",
        ((f"{P0}.backendRef", {"name": "svc"}),),
        f"{P0}.backendRef.port",
        "backendRef.port is required when backendRef.kind is Service",
    ),
    InvalidCase(
        "too-many-placements",
        (("spec.placements", NINE_PLACEMENTS),),
        "spec.placements",
        "at most 8 items",
    ),
    InvalidCase(
        "duplicate-placement-name",
        ((f"{P1}.name", "aws"),),
        f"{P1}",
        "Duplicate value",
        py_path="spec",
    ),
    InvalidCase(
        "placement-name-not-dns-label",
        ((f"{P0}.name", "AWS_primary"),),
        f"{P0}.name",
        "should match",
    ),
    InvalidCase(
        "unknown-role",
        ((f"{P0}.role", "Leader"),),
        f"{P0}.role",
        "Unsupported value",
    ),
    InvalidCase(
        "step-percent-zero",
        (("spec.traffic.stepPercent", 0),),
        "spec.traffic.stepPercent",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "weighted-all-zero",
        (("spec.traffic.mode", "Weighted"), (f"{P0}.weight", 0), (f"{P1}.weight", 0)),
        "spec.placements",
        "must not all be 0 in Weighted mode",
    ),
    InvalidCase(
        "missing-nodes",
        ((f"{P0}.nodes", DELETE),),
        f"{P0}.nodes",
        "Required value",
    ),
    InvalidCase(
        "unknown-field",
        ((f"{P0}.nodez", {"max": 3}),),
        f"{P0}.nodez",
        "unknown field",
    ),
    InvalidCase(
        "endpoint-url-without-scheme",
        ((f"{P0}.endpoint.url", "127.0.0.1:8000"),),
        f"{P0}.endpoint.url",
        "should match",
    ),
    InvalidCase(
        "gke-project-invalid",
        ((f"{P1}.provider.gkeNodePool.project", "My_Project"),),
        f"{P1}.provider.gkeNodePool.project",
        "should match",
    ),
    InvalidCase(
        "capi-template-without-bootstrap-config",
        ((f"{CAPI1}.bootstrapConfigRef", DELETE),),
        CAPI1,
        "needs provider.clusterAPI.clusterName, bootstrapConfigRef and infrastructureTemplates",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "capi-template-without-cluster-name",
        ((f"{CAPI1}.clusterName", DELETE),),
        CAPI1,
        "needs provider.clusterAPI.clusterName",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "capi-template-without-infrastructure-templates",
        ((f"{CAPI1}.infrastructureTemplates", DELETE),),
        CAPI1,
        "infrastructureTemplates to build its MachineDeployments",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "capi-infrastructure-templates-count-mismatch",
        ((f"{P1}.template.instanceTypes", ["p5.48xlarge"]),),
        f"{CAPI1}.infrastructureTemplates",
        "one entry per template.instanceTypes entry",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "capi-infrastructure-template-kind-invalid",
        ((f"{CAPI1}.infrastructureTemplates[0].kind", "AWS Machine Template"),),
        f"{CAPI1}.infrastructureTemplates[0].kind",
        "should match",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "capi-version-without-v",
        ((f"{CAPI1}.version", "1.33.1"),),
        f"{CAPI1}.version",
        "should match",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "eks-nodegroup-missing-without-template",
        ((f"{P0}.provider.eksNodeGroup.nodegroup", DELETE),),
        f"{P0}.provider.eksNodeGroup.nodegroup",
        "provider.eksNodeGroup.nodegroup is required without a template",
    ),
    InvalidCase(
        "gke-node-pool-missing-without-template",
        ((f"{P1}.provider.gkeNodePool.nodePool", DELETE),),
        f"{P1}.provider.gkeNodePool.nodePool",
        "provider.gkeNodePool.nodePool is required without a template",
    ),
    InvalidCase(
        "capi-machine-deployment-missing-without-template",
        ((f"{P1}.template", DELETE), (f"{P1}.lifecycle", DELETE)),
        f"{CAPI1}.machineDeployment",
        "provider.clusterAPI.machineDeployment is required without a template",
        base_edits=WITH_CAPI_TEMPLATE,
    ),
    InvalidCase(
        "probe-path-without-slash",
        (("spec.healthCheck", {"inference": {"path": "v1/models"}}),),
        "spec.healthCheck.inference.path",
        "should match",
    ),
)
