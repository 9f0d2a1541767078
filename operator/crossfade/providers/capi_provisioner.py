"""Cluster API provisioner: create, adopt and delete crossfade-owned MachineDeployments.

A templated ``ClusterAPI`` placement names a bootstrap config template and one infrastructure
machine template per instance type (the instance type lives in the infrastructure template
for CAPA, CAPG, CAPZ, ...). Idempotent across crashes: candidate names are deterministic
(``node_group_name``), every MachineDeployment crossfade creates carries the ownership labels
(the same keys as the EKS tags, deletion policy included), a create answered ``409
AlreadyExists`` re-reads the object and adopts it only if its labels name the same owner, and
a delete is conditional on the uid and resourceVersion whose labels were just checked.
Before a create, the bootstrap and infrastructure templates it names must exist
(``capi_templates.TemplateChecker``).
Capacity trouble is read the way ``capi.ClusterAPIProvider.describe`` reads it (Machines
failing with an infrastructure provider's capacity code); a MachineDeployment of ours with no
ready replica and such failures is deleted and the next infrastructure template is tried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.providers.capi import (
    AUTOSCALER_MAX_ANNOTATION,
    AUTOSCALER_MIN_ANNOTATION,
    DEPLOYMENT_NAME_LABEL,
    GROUP,
    MACHINE_DEPLOYMENTS,
    PLACEMENT_MEMBER,
    VERSION,
    ClusterAPIProvider,
    MachineDeploymentRef,
    kubeconfig_client,
)
from crossfade.providers.capi_templates import TemplateChecker, TemplateRef
from crossfade.providers.errors import (
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
)
from crossfade.providers.kubeconfig import (
    TRANSPORT_ERRORS,
    ApiClientSource,
    as_source,
    close_source,
    kube_call,
    map_api_exception,
)
from crossfade.providers.provisioning import (
    OWNERSHIP_TAGS,
    DeletionPolicyTag,
    NodeGroupTemplate,
    OwnedNodeGroup,
    Owner,
    OwnershipConflict,
    ProvisionResult,
    deletion_policy_of,
)
from crossfade.providers.provisioning_walk import (
    CandidateState,
    CreateAttempt,
    ensure_node_group,
)
from crossfade.providers.registry import placement_member

if TYPE_CHECKING:
    from crossfade.providers.registry import ProviderContext

log = logging.getLogger(__name__)

API_VERSION = f"{GROUP}/{VERSION}"
CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
FIELD_MANAGER = "crossfade"
# Always: Cluster API keeps the taint on the Node (re-adds it if removed), as a node group's
# own taints are kept by EKS and GKE. Needs the MachineTaintPropagation feature gate.
TAINT_PROPAGATION = "Always"
CONFLICT = 409  # AlreadyExists on a create, a failed precondition on a delete
GONE = 404
DELETE_ATTEMPTS = 3
UNREPORTED_PHASE = "Pending"  # before the controller writes status.phase


@dataclass(frozen=True, slots=True)
class MachineDeploymentBlueprint:
    """What every MachineDeployment crossfade creates for one placement shares.

    ``infrastructure_templates[i]`` holds ``template.instance_types[i]``.
    """

    namespace: str
    cluster_name: str
    bootstrap_config_ref: TemplateRef
    infrastructure_templates: tuple[TemplateRef, ...]
    version: str | None = None

    @classmethod
    def from_member(
        cls, member: Mapping[str, Any], *, placement: str
    ) -> MachineDeploymentBlueprint:
        """Return the blueprint of a validated ``provider.clusterAPI`` member (wire form)."""
        missing = [
            key
            for key in ("namespace", "clusterName", "bootstrapConfigRef", "infrastructureTemplates")
            if not member.get(key)
        ]
        if missing:
            raise InvalidRequest(
                f"placement {placement!r}: provider.{PLACEMENT_MEMBER} needs "
                f"{', '.join(missing)} to create MachineDeployments",
                code="IncompleteClusterAPITemplate",
            )
        version = member.get("version")
        return cls(
            namespace=str(member["namespace"]),
            cluster_name=str(member["clusterName"]),
            bootstrap_config_ref=TemplateRef.from_wire(member["bootstrapConfigRef"]),
            infrastructure_templates=tuple(
                TemplateRef.from_wire(ref) for ref in member["infrastructureTemplates"]
            ),
            version=str(version) if version else None,
        )


def _taints(template: NodeGroupTemplate) -> list[dict[str, str]]:
    taints = []
    for taint in template.taints:
        wire = {"key": taint.key, "effect": taint.effect, "propagation": TAINT_PROPAGATION}
        if taint.value:  # the CRD wants a non-empty value or none at all
            wire["value"] = taint.value
        taints.append(wire)
    return taints


def machine_deployment_manifest(
    *,
    name: str,
    blueprint: MachineDeploymentBlueprint,
    infrastructure: TemplateRef,
    template: NodeGroupTemplate,
    ownership: Mapping[str, str],
) -> dict[str, Any]:
    """Return the v1beta2 MachineDeployment crossfade creates for one infrastructure template.

    Ownership labels go on the MachineDeployment; the template's node labels on its Machines
    (Cluster API copies to the Node only the prefixes it syncs, see docs/providers/capi.md);
    the template's taints into ``spec.template.spec.taints``; bounds into the autoscaler
    annotations the provider reads; replicas start at ``min_size``.
    """
    selector = {DEPLOYMENT_NAME_LABEL: name, CLUSTER_NAME_LABEL: blueprint.cluster_name}
    machine_spec: dict[str, Any] = {
        "clusterName": blueprint.cluster_name,
        "bootstrap": {"configRef": blueprint.bootstrap_config_ref.to_wire()},
        "infrastructureRef": infrastructure.to_wire(),
    }
    if blueprint.version is not None:
        machine_spec["version"] = blueprint.version
    if taints := _taints(template):
        machine_spec["taints"] = taints
    return {
        "apiVersion": API_VERSION,
        "kind": "MachineDeployment",
        "metadata": {
            "name": name,
            "namespace": blueprint.namespace,
            "labels": {**ownership, CLUSTER_NAME_LABEL: blueprint.cluster_name},
            "annotations": {
                AUTOSCALER_MIN_ANNOTATION: str(template.min_size),
                AUTOSCALER_MAX_ANNOTATION: str(template.max_size),
            },
        },
        "spec": {
            "clusterName": blueprint.cluster_name,
            "replicas": template.min_size,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": {**template.labels, **selector}},
                "spec": machine_spec,
            },
        },
    }


def _labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = (deployment.get("metadata") or {}).get("labels") or {}
    return labels


def _phase(deployment: Mapping[str, Any]) -> str:
    return str((deployment.get("status") or {}).get("phase") or UNREPORTED_PHASE)


class ClusterApiProvisioner:
    """``Provisioner`` for one namespace of a Cluster API management cluster."""

    def __init__(
        self,
        *,
        blueprint: MachineDeploymentBlueprint,
        api: client.ApiClient | ApiClientSource,
    ) -> None:
        self.blueprint = blueprint
        self._api = as_source(api)
        self._templates = TemplateChecker(self._api)

    @property
    def namespace(self) -> str:
        return self.blueprint.namespace

    async def aclose(self) -> None:
        """Close the client built from a kubeconfig Secret (a shared client stays open)."""
        await close_source(self._api)

    async def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(await self._api())

    async def _list(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        custom = await self._custom()
        listed = await kube_call(
            f"list MachineDeployments in {self.namespace}",
            custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, MACHINE_DEPLOYMENTS, label_selector=label_selector
            ),
        )
        items: list[dict[str, Any]] = listed.get("items", [])
        return items

    async def _get(self, name: str) -> dict[str, Any] | None:
        custom = await self._custom()
        try:
            found: dict[str, Any] = await kube_call(
                f"get MachineDeployment {self.namespace}/{name}",
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, MACHINE_DEPLOYMENTS, name
                ),
            )
        except NotFound:
            return None
        return found

    def _check_owner(self, deployment: Mapping[str, Any], *, name: str, owner: Owner) -> None:
        if Owner.from_tags(_labels(deployment)) != owner:
            raise OwnershipConflict(
                f"MachineDeployment {self.namespace}/{name} exists but is not owned by "
                f"placement {owner.placement!r} of pool {owner.namespace}/{owner.pool}",
                code="OwnershipConflict",
            )

    async def ensure(
        self, *, owner: Owner, template: NodeGroupTemplate, deletion_policy: DeletionPolicyTag
    ) -> ProvisionResult:
        """Adopt the owner's live MachineDeployment, or create one; on ICE try the next template."""
        infrastructure = self.blueprint.infrastructure_templates
        if len(infrastructure) != len(template.instance_types):
            raise InvalidRequest(
                f"{len(template.instance_types)} instance types but {len(infrastructure)} "
                "infrastructure templates: they pair up one to one",
                code="InfrastructureTemplateCount",
            )
        return await ensure_node_group(
            self,
            owner=owner,
            template=template,
            deletion_policy=deletion_policy,
            where=f"capi/{self.namespace}",
            capacity_per_instance_type=False,
        )

    async def find_candidates(
        self, names: Sequence[str], *, owner: Owner
    ) -> dict[str, dict[str, Any]]:
        """Return the MachineDeployments among ``names`` that exist (ownership checked later)."""
        return {
            item["metadata"]["name"]: item
            for item in await self._list()
            if item["metadata"]["name"] in names
        }

    async def candidate_state(
        self, name: str, found: dict[str, Any], *, owner: Owner
    ) -> CandidateState | None:
        """Return the walk's view of one MachineDeployment; None while it is being deleted."""
        self._check_owner(found, name=name, owner=owner)
        if found["metadata"].get("deletionTimestamp"):
            return None
        try:
            state = await ClusterAPIProvider(
                ref=MachineDeploymentRef(self.namespace, name), api=self._api
            ).describe()
        except NotFound:
            return None  # deleted since the list; its name is free again on the next pass
        # Ours and serving nothing with capacity failures: the infrastructure has no
        # capacity for this template. Delete it (its Machines go with it), try the next.
        return CandidateState(
            status=_phase(found),
            insufficient_capacity=state.insufficient_capacity and not state.ready,
            never_served=True,
        )

    def log_adopted(self, name: str, instance_type: str) -> None:
        """Log a MachineDeployment the walk adopted."""
        self._log("capi machine deployment adopted", name, instance_type=instance_type)

    async def create_candidate(self, attempt: CreateAttempt) -> ProvisionResult:
        """Create one MachineDeployment; on AlreadyExists adopt it if (and only if) it is ours.

        Its infrastructure template is the one at the attempt's position; before a create the
        bootstrap and infrastructure templates are checked, so a wrong reference fails here,
        with its name.
        """
        owner, name, instance_type = attempt.owner, attempt.name, attempt.instance_type
        infrastructure = self.blueprint.infrastructure_templates[attempt.position]
        for template_ref in (self.blueprint.bootstrap_config_ref, infrastructure):
            await self._templates.check(template_ref, namespace=self.namespace)
        manifest = machine_deployment_manifest(
            name=name,
            blueprint=self.blueprint,
            infrastructure=infrastructure,
            template=attempt.template,
            ownership=attempt.tags,
        )
        custom = await self._custom()
        try:
            created: dict[str, Any] = await custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                MACHINE_DEPLOYMENTS,
                manifest,
                field_manager=FIELD_MANAGER,
            )
        except ApiException as error:
            if error.status != CONFLICT:
                raise map_api_exception(error, what=f"create MachineDeployment {name}") from None
            # Our own earlier create (a lost reply, another replica) or someone else's object.
            found = await self._get(name)
            if found is None:
                raise map_api_exception(error, what=f"create MachineDeployment {name}") from None
            self._check_owner(found, name=name, owner=owner)
            self._log("capi machine deployment adopted after create", name)
            return attempt.adopted(status=_phase(found), create_calls=1)
        except TRANSPORT_ERRORS as error:
            raise ProviderUnavailable(f"create MachineDeployment {name}: {error!r}") from None
        self._log("capi machine deployment created", name, instance_type=instance_type)
        return attempt.created(status=_phase(created), create_calls=1)

    async def list_owned(self) -> list[OwnedNodeGroup]:
        """Return the namespace's MachineDeployments that carry all ownership labels."""
        owned: list[OwnedNodeGroup] = []
        for item in await self._list(label_selector=",".join(OWNERSHIP_TAGS)):
            labels = _labels(item)
            owner = Owner.from_tags(labels)
            if owner is not None:
                owned.append(
                    OwnedNodeGroup(
                        name=item["metadata"]["name"],
                        owner=owner,
                        deletion_policy=deletion_policy_of(labels),
                        status=_phase(item),
                    )
                )
        return owned

    async def delete_owned(self, *, name: str, owner: Owner) -> bool:
        """Delete ``name`` after re-reading its labels; the delete is conditional on that read.

        The uid and resourceVersion whose labels were checked are preconditions of the delete,
        so a MachineDeployment replaced or relabelled in between is never deleted: the
        apiserver answers 409 and the labels are read again.
        """
        custom = await self._custom()
        for _ in range(DELETE_ATTEMPTS):
            found = await self._get(name)
            if found is None:
                return False
            self._check_owner(found, name=name, owner=owner)
            metadata = found["metadata"]
            preconditions = client.V1Preconditions(
                uid=metadata["uid"], resource_version=metadata["resourceVersion"]
            )
            try:
                await custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    MACHINE_DEPLOYMENTS,
                    name,
                    body=client.V1DeleteOptions(preconditions=preconditions),
                )
            except ApiException as error:
                if error.status == GONE:
                    return False
                if error.status == CONFLICT:  # a precondition no longer holds: read again
                    continue
                raise map_api_exception(error, what=f"delete MachineDeployment {name}") from None
            except TRANSPORT_ERRORS as error:
                raise ProviderUnavailable(f"delete MachineDeployment {name}: {error!r}") from None
            self._log("capi machine deployment deleted", name)
            return True
        raise ProviderUnavailable(
            f"delete MachineDeployment {self.namespace}/{name}: it kept changing while being "
            f"deleted ({DELETE_ATTEMPTS} attempts)",
            code="Conflict",
        )

    def _log(self, message: str, machine_deployment: str, **fields: str) -> None:
        # Keys must not be LogRecord attributes (``name``, ``message``): logging raises.
        extra = {"capi_namespace": self.namespace, "machine_deployment": machine_deployment}
        log.info(message, extra={**extra, **fields})


def build(placement: Mapping[str, Any], context: ProviderContext) -> ClusterApiProvisioner:
    """Provisioner factory of one templated ``ClusterAPI`` placement (wire form).

    The kubeconfig Secret is read from the pool's namespace on first use.
    """
    member = placement_member(placement, PLACEMENT_MEMBER)
    blueprint = MachineDeploymentBlueprint.from_member(member, placement=str(placement.get("name")))
    return ClusterApiProvisioner(blueprint=blueprint, api=kubeconfig_client(placement, context))
