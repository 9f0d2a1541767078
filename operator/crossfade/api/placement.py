"""Placement: where the model may run (provider member, node bounds, backend, probe endpoint)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field

from crossfade.api.base import ApiModel, CelRule
from crossfade.api.constants import (
    DNS_LABEL_MAX_CHARS,
    DNS_SUBDOMAIN_MAX_CHARS,
    URL_MAX_CHARS,
)
from crossfade.api.fields import BackendKind, DnsLabel, DnsSubdomain, ProviderType, Role
from crossfade.api.template import MAX_INSTANCE_TYPES, Lifecycle, PlacementTemplate

MAX_NODES = 1000
MAX_PRIORITY = 1000
MAX_ACCELERATORS_PER_NODE = 16
MAX_PORT = 65535
MAX_WEIGHT_PERCENT = 100
EKS_NAME_MAX_CHARS = 100
GKE_NAME_MAX_CHARS = 40
REGION_MAX_CHARS = 32
DEFAULT_ACCELERATOR_RESOURCE = "nvidia.com/gpu"
DEFAULT_KUBECONFIG_KEY = "value"

EKS_NAME_PATTERN = r"^[0-9A-Za-z][A-Za-z0-9_-]*$"
AWS_REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"
GCP_PROJECT_PATTERN = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
GCP_LOCATION_PATTERN = r"^[a-z]+-[a-z]+[0-9]+(-[a-z])?$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a secret
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
URL_PATTERN = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"
GROUP_PATTERN = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Cluster API v1beta2 contract-versioned references (ContractVersionedObjectReference).
CAPI_API_GROUP_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CAPI_KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
KUBERNETES_VERSION_PATTERN = r"^v[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$"
KUBERNETES_VERSION_MAX_CHARS = 64


class SecretKeyRef(ApiModel):
    """A key of a Secret in the pool's namespace."""

    name: DnsSubdomain = Field(description="Name of the Secret, in the pool's namespace.")
    key: Annotated[str, Field(min_length=1, max_length=DNS_SUBDOMAIN_MAX_CHARS)] = Field(
        default=DEFAULT_KUBECONFIG_KEY,
        pattern=SECRET_KEY_PATTERN,
        description="Key inside the Secret holding a kubeconfig (Cluster API writes `value`).",
    )


class EKSNodeGroup(ApiModel):
    """An AWS EKS managed node group."""

    region: str = Field(
        min_length=1,
        max_length=REGION_MAX_CHARS,
        pattern=AWS_REGION_PATTERN,
        description="AWS region of the EKS cluster, e.g. `us-east-1`.",
    )
    cluster: str = Field(
        min_length=1,
        max_length=EKS_NAME_MAX_CHARS,
        pattern=EKS_NAME_PATTERN,
        description="Name of the EKS cluster.",
    )
    nodegroup: str | None = Field(
        default=None,
        min_length=1,
        max_length=DNS_LABEL_MAX_CHARS,
        pattern=EKS_NAME_PATTERN,
        description="Name of the existing managed node group whose desired size crossfade "
        "sets; required unless the placement has a `template`. With a template leave it out: "
        "crossfade creates and names the node group itself (`cf-<placement>-<hash>-<n>`, see "
        "status.placements[].nodeGroup) and does not use a name given here.",
    )


class GKENodePool(ApiModel):
    """A Google Kubernetes Engine node pool."""

    project: str = Field(
        min_length=6,
        max_length=30,
        pattern=GCP_PROJECT_PATTERN,
        description="Google Cloud project ID.",
    )
    location: str = Field(
        min_length=1,
        max_length=REGION_MAX_CHARS,
        pattern=GCP_LOCATION_PATTERN,
        description="Region or zone of the cluster, e.g. `europe-west4` or `us-central1-a`.",
    )
    cluster: DnsLabel = Field(description="Name of the GKE cluster.")
    node_pool: DnsLabel | None = Field(
        default=None,
        description="Name of the existing node pool whose size crossfade sets; required "
        "unless the placement has a `template`. With a template leave it out: crossfade "
        "creates and names the node pool itself (`cf-<placement>-<hash>-<n>`, see "
        "status.placements[].nodeGroup) and does not use a name given here.",
    )


class ContractRef(ApiModel):
    """A Cluster API template reference (v1beta2: group and kind, the version from its CRD)."""

    api_group: str = Field(
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=CAPI_API_GROUP_PATTERN,
        description="API group, e.g. `infrastructure.cluster.x-k8s.io`.",
    )
    kind: str = Field(
        min_length=1,
        max_length=DNS_LABEL_MAX_CHARS,
        pattern=CAPI_KIND_PATTERN,
        description="Kind, e.g. `AWSMachineTemplate` or `KubeadmConfigTemplate`.",
    )
    name: DnsSubdomain = Field(description="Name, in the MachineDeployment's namespace.")


class ClusterAPIMachineDeployment(ApiModel):
    """A Cluster API MachineDeployment in a (possibly remote) management cluster.

    `clusterName`, `version`, `bootstrapConfigRef` and `infrastructureTemplates` are only
    read when the placement has a `template`: they say how crossfade builds the
    MachineDeployments it creates.
    """

    kubeconfig_secret_ref: SecretKeyRef = Field(
        description="Secret with a kubeconfig for the cluster holding the MachineDeployment."
    )
    namespace: DnsLabel = Field(description="Namespace of the MachineDeployment.")
    machine_deployment: DnsSubdomain | None = Field(
        default=None,
        description="Name of the existing MachineDeployment whose replicas crossfade sets; "
        "required unless the placement has a `template`. With a template leave it out: "
        "crossfade creates and names the MachineDeployments itself (`cf-<placement>-<hash>-<n>`, "
        "see status.placements[].nodeGroup) and does not use a name given here.",
    )
    cluster_name: DnsLabel | None = Field(
        default=None,
        description="Cluster API Cluster the created MachineDeployments join "
        "(`spec.clusterName`); needed with a template.",
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=KUBERNETES_VERSION_MAX_CHARS,
        pattern=KUBERNETES_VERSION_PATTERN,
        description="Kubernetes version of the created Machines, e.g. `v1.33.1`; "
        "absent = left to the bootstrap provider.",
    )
    bootstrap_config_ref: ContractRef | None = Field(
        default=None,
        description="Bootstrap config template of the created Machines (e.g. a "
        "KubeadmConfigTemplate); needed with a template.",
    )
    infrastructure_templates: list[ContractRef] = Field(
        default_factory=list,
        max_length=MAX_INSTANCE_TYPES,
        json_schema_extra={"default": []},
        description="Infrastructure machine templates (e.g. AWSMachineTemplate), one per "
        "`template.instanceTypes` entry and in the same order: entry i holds instance type i. "
        "On insufficient capacity crossfade moves to the next one.",
    )


class KarpenterNodePool(ApiModel):
    """A Karpenter NodePool (karpenter.sh/v1); crossfade sets its limits and replicas hint."""

    node_pool: DnsSubdomain = Field(description="Name of the Karpenter NodePool.")
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret with a kubeconfig for the cluster running Karpenter; "
        "absent = the operator's own cluster.",
    )


_PROVIDER_MEMBERS: tuple[tuple[ProviderType, str, str, str], ...] = (
    (
        ProviderType.EKS_NODE_GROUP,
        "eksNodeGroup",
        "eks_node_group",
        "{region, cluster and, without a template, nodegroup}",
    ),
    (
        ProviderType.GKE_NODE_POOL,
        "gkeNodePool",
        "gke_node_pool",
        "{project, location, cluster and, without a template, nodePool}",
    ),
    (
        ProviderType.CLUSTER_API,
        "clusterAPI",
        "cluster_api",
        "{kubeconfigSecretRef, namespace and, without a template, machineDeployment}",
    ),
    (ProviderType.KARPENTER_NODE_POOL, "karpenterNodePool", "karpenter_node_pool", "{nodePool}"),
)


def _member_rule(provider_type: ProviderType, wire: str, attr: str, shape: str) -> CelRule:
    def check(provider: Any) -> bool:
        return bool(provider.type != provider_type or getattr(provider, attr) is not None)

    return CelRule(
        rule=f"self.type != '{provider_type.value}' || has(self.{wire})",
        message=f"provider.type {provider_type.value} needs provider.{wire} {shape}: "
        f"add it, or change provider.type to match the member you set",
        check=check,
        field_path=f".{wire}",
        reason="FieldValueRequired",
    )


def _count_members(provider: Any) -> int:
    return sum(getattr(provider, attr) is not None for _, _, attr, _ in _PROVIDER_MEMBERS)


class Provider(ApiModel):
    """Where capacity comes from: `type` plus exactly the one member it names."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *(_member_rule(*member) for member in _PROVIDER_MEMBERS),
        CelRule(
            rule=" + ".join(f"(has(self.{wire}) ? 1 : 0)" for _, wire, _, _ in _PROVIDER_MEMBERS)
            + " == 1",
            message="provider must set exactly one member (eksNodeGroup, gkeNodePool, "
            "clusterAPI or karpenterNodePool), the one provider.type names: remove the others",
            check=lambda provider: _count_members(provider) == 1,
        ),
        CelRule(
            rule="self.type == oldSelf.type",
            message="provider.type is immutable: to move a placement to another provider, "
            "add a placement with a new name and remove this one",
            check=None,
            field_path=".type",
            reason="FieldValueForbidden",
        ),
    )

    type: ProviderType = Field(description="Which capacity API this placement scales.")
    eks_node_group: EKSNodeGroup | None = Field(
        default=None, description="Set when type is EKSNodeGroup."
    )
    gke_node_pool: GKENodePool | None = Field(
        default=None, description="Set when type is GKENodePool."
    )
    cluster_api: ClusterAPIMachineDeployment | None = Field(
        default=None, alias="clusterAPI", description="Set when type is ClusterAPI."
    )
    karpenter_node_pool: KarpenterNodePool | None = Field(
        default=None, description="Set when type is KarpenterNodePool."
    )


class Accelerator(ApiModel):
    """What accelerators a node of this placement carries."""

    type: str | None = Field(
        default=None,
        min_length=1,
        max_length=DNS_LABEL_MAX_CHARS,
        description="Accelerator model for humans and capacity math, e.g. `nvidia-h100-80gb`.",
    )
    per_node: int = Field(
        default=1,
        ge=1,
        le=MAX_ACCELERATORS_PER_NODE,
        description="Accelerators per node.",
    )
    resource_name: str = Field(
        default=DEFAULT_ACCELERATOR_RESOURCE,
        min_length=1,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource name counted in node allocatable.",
    )


class NodeRange(ApiModel):
    """Bounds crossfade keeps the placement's node count within."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.min <= self.max",
            message="nodes.min must not exceed nodes.max: lower min or raise max",
            check=lambda nodes: nodes.min <= nodes.max,
            field_path=".min",
        ),
    )

    min: int = Field(
        default=0, ge=0, le=MAX_NODES, description="Fewest nodes (0 = may scale to zero)."
    )
    max: int = Field(ge=1, le=MAX_NODES, description="Most nodes crossfade will ask for.")


class BackendRef(ApiModel):
    """What this placement's traffic weight points at in the HTTPRoute."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule(
            rule="self.kind != 'Service' || has(self.port)",
            message="backendRef.port is required when backendRef.kind is Service: "
            "set the Service port that serves inference",
            check=lambda ref: ref.kind != BackendKind.SERVICE or ref.port is not None,
            field_path=".port",
            reason="FieldValueRequired",
        ),
    )

    group: str | None = Field(
        default=None,
        max_length=DNS_SUBDOMAIN_MAX_CHARS,
        pattern=GROUP_PATTERN,
        description="API group of the backend; empty for a Service, "
        "`inference.networking.k8s.io` for an Inference Extension InferencePool.",
    )
    kind: BackendKind = Field(default=BackendKind.SERVICE, description="Kind of the backend.")
    name: DnsSubdomain = Field(description="Name of the backend.")
    namespace: DnsLabel | None = Field(
        default=None,
        description="Namespace of the backend; absent = the HTTPRoute's namespace "
        "(another namespace needs a ReferenceGrant).",
    )
    port: int | None = Field(default=None, ge=1, le=MAX_PORT, description="Service port.")


class Endpoint(ApiModel):
    """Where the inference probe sends its request."""

    url: str = Field(
        min_length=1,
        max_length=URL_MAX_CHARS,
        pattern=URL_PATTERN,
        description="Base URL of the OpenAI-compatible server, e.g. `https://eks.example.com`; "
        "healthCheck.inference.path is appended.",
    )


# Members that name the node group crossfade scales: (member wire, member attribute, name
# wire, name attribute, what the name names). Without a template the name is required;
# with one crossfade creates and names the node group itself.
_NODE_GROUP_NAMES: tuple[tuple[str, str, str, str, str], ...] = (
    ("eksNodeGroup", "eks_node_group", "nodegroup", "nodegroup", "managed node group"),
    ("gkeNodePool", "gke_node_pool", "nodePool", "node_pool", "node pool"),
    ("clusterAPI", "cluster_api", "machineDeployment", "machine_deployment", "MachineDeployment"),
)


def _node_group_name_rule(
    member_wire: str, member_attr: str, name_wire: str, name_attr: str, noun: str
) -> CelRule:
    def check(placement: Any) -> bool:
        member = getattr(placement.provider, member_attr)
        return bool(
            placement.template is not None
            or member is None
            or getattr(member, name_attr) is not None
        )

    return CelRule(
        rule=f"has(self.template) || !has(self.provider.{member_wire}) "
        f"|| has(self.provider.{member_wire}.{name_wire})",
        message=f"provider.{member_wire}.{name_wire} is required without a template: name "
        f"the existing {noun} crossfade scales, or add a template so crossfade creates one",
        check=check,
        field_path=f".provider.{member_wire}.{name_wire}",
        reason="FieldValueRequired",
    )


def _templated_capi(placement: Any) -> ClusterAPIMachineDeployment | None:
    """Return the ClusterAPI member of a placement that has a template, else None."""
    if placement.template is None or placement.provider.type != ProviderType.CLUSTER_API:
        return None
    member: ClusterAPIMachineDeployment | None = placement.provider.cluster_api
    return member


def _capi_template_incomplete(placement: Any) -> bool:
    member = _templated_capi(placement)
    return member is not None and (
        member.cluster_name is None
        or member.bootstrap_config_ref is None
        or not member.infrastructure_templates
    )


def _capi_template_count_differs(placement: Any) -> bool:
    member = _templated_capi(placement)
    return (
        member is not None
        and bool(member.infrastructure_templates)
        and len(member.infrastructure_templates) != len(placement.template.instance_types)
    )


class Placement(ApiModel):
    """One place the model may run, with its priority and role."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        *(_node_group_name_rule(*names) for names in _NODE_GROUP_NAMES),
        CelRule(
            rule="self.lifecycle != 'OnDemand' || has(self.template)",
            message="lifecycle OnDemand needs a template to create the node group from: "
            "add template, or use lifecycle AlwaysPresent",
            check=lambda p: p.lifecycle != Lifecycle.ON_DEMAND or p.template is not None,
            field_path=".template",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="!has(self.template) || self.provider.type != 'ClusterAPI' "
            "|| !has(self.provider.clusterAPI) || (has(self.provider.clusterAPI.clusterName) "
            "&& has(self.provider.clusterAPI.bootstrapConfigRef) "
            "&& size(self.provider.clusterAPI.infrastructureTemplates) > 0)",
            message="a ClusterAPI placement with a template needs provider.clusterAPI."
            "clusterName, bootstrapConfigRef and infrastructureTemplates to build its "
            "MachineDeployments: add them, or remove the template",
            check=lambda p: not _capi_template_incomplete(p),
            field_path=".provider.clusterAPI",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="!has(self.template) || self.provider.type != 'ClusterAPI' "
            "|| !has(self.provider.clusterAPI) "
            "|| size(self.provider.clusterAPI.infrastructureTemplates) == 0 "
            "|| size(self.provider.clusterAPI.infrastructureTemplates) "
            "== size(self.template.instanceTypes)",
            message="provider.clusterAPI.infrastructureTemplates needs one entry per "
            "template.instanceTypes entry, in the same order: add or remove entries",
            check=lambda p: not _capi_template_count_differs(p),
            field_path=".provider.clusterAPI.infrastructureTemplates",
        ),
        CelRule(
            rule="self.lifecycle != 'OnDemand' || self.role != 'Primary'",
            message="a Primary placement serves by default and cannot be OnDemand: "
            "use lifecycle AlwaysPresent, or make it a Standby",
            check=lambda p: p.lifecycle != Lifecycle.ON_DEMAND or p.role != Role.PRIMARY,
            field_path=".lifecycle",
        ),
    )

    name: DnsLabel = Field(description="Unique name of the placement (list-map key).")
    priority: int = Field(
        ge=0,
        le=MAX_PRIORITY,
        description="Preference among placements; higher is preferred; unique in the pool.",
    )
    role: Role = Field(
        default=Role.STANDBY,
        description="Primary serves by default (exactly one); Standby takes over on failure.",
    )
    provider: Provider = Field(description="The capacity API this placement scales.")
    accelerator: Accelerator = Field(
        default_factory=Accelerator,
        json_schema_extra={"default": Accelerator().to_wire()},
        description="Accelerators per node, used for capacity math and node health.",
    )
    nodes: NodeRange = Field(description="Node count bounds.")
    cluster_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret with a kubeconfig for the cluster the nodes join (node health); "
        "absent = the operator's own cluster.",
    )
    backend_ref: BackendRef | None = Field(
        default=None,
        description="What traffic weights point at (required with traffic.gatewayAPI).",
    )
    endpoint: Endpoint | None = Field(
        default=None, description="Inference endpoint probed for health; absent = no probe."
    )
    weight: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WEIGHT_PERCENT,
        description="Relative share of traffic in Weighted mode; absent = equal shares.",
    )
    template: PlacementTemplate | None = Field(
        default=None,
        description="How to create the node group when it does not exist (crossfade names, "
        "tags and owns what it creates); absent = the node group must exist.",
    )
    lifecycle: Lifecycle = Field(
        default=Lifecycle.ALWAYS_PRESENT,
        description="AlwaysPresent keeps the node group at nodes.min all the time; OnDemand "
        "(needs template) creates it only when failover needs it.",
    )
