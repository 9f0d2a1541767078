"""The permissions the operator needs, written out independently of the chart's templates.

The render tests compare the chart's rules with this table; the apiserver tests ask the real
RBAC authorizer about every row (allowed) and every other verb on the same resources
(forbidden).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

# chart values case (tests/packaging/values) -> the expected_grants settings it implies
RBAC_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "production": {"secrets": {None: ("gke-standby-kubeconfig", "capi-kubeconfig")}},
    "namespaced": {
        "lease_name": "crossfade-team-leader",
        "cluster_wide": False,
        "cluster_api": False,
        "karpenter": False,
        "inference_extension": False,
        "secrets": {None: ("aws-kubeconfig",), "team-a": ("probe-headers",)},
    },
}

STANDARD_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


class Scope(Enum):
    """Where a grant holds."""

    CLUSTER = "cluster"  # a cluster-scoped resource
    SERVED = "served"  # every served namespace (all namespaces in cluster-wide mode)
    RELEASE = "release"  # only the release namespace


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verbs: frozenset[str]
    scope: Scope
    names: tuple[str, ...] = ()  # non-empty: only these objects
    namespace: str | None = None  # RELEASE scope in another namespace than the release's

    @property
    def plural(self) -> str:
        return self.resource.split("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.split("/")[1] if "/" in self.resource else ""


def _g(
    group: str,
    resource: str,
    verbs: str,
    scope: Scope,
    names: tuple[str, ...] = (),
    namespace: str | None = None,
) -> Grant:
    return Grant(group, resource, frozenset(verbs.split()), scope, names, namespace)


def expected_grants(
    *,
    lease_name: str | None = "crossfade-leader",
    cluster_wide: bool = True,
    cluster_api: bool = True,
    karpenter: bool = True,
    inference_extension: bool = True,
    secrets: dict[str | None, tuple[str, ...]] | None = None,
) -> list[Grant]:
    """Return every grant the operator needs for the given chart settings.

    ``secrets`` maps a namespace (None: the release namespace) to the Secret names readable.
    """
    served = Scope.SERVED
    grants = [
        _g("crossfade.dev", "inferencepools", "get list watch patch", served),
        _g("crossfade.dev", "inferencepools/status", "get patch update", served),
        _g("", "events", "create patch", served),
        _g("gateway.networking.k8s.io", "httproutes", "get list watch patch", served),
        _g("gateway.networking.k8s.io", "referencegrants", "get list watch", served),
        _g("", "services", "get", served),
        _g("", "nodes", "get list watch", Scope.CLUSTER),
        _g("apiextensions.k8s.io", "customresourcedefinitions", "get list watch", Scope.CLUSTER),
    ]
    if lease_name is not None:  # leader election on
        grants += [
            _g("coordination.k8s.io", "leases", "create", Scope.RELEASE),
            _g("coordination.k8s.io", "leases", "get update patch", Scope.RELEASE, (lease_name,)),
        ]
    if not cluster_wide:  # kopf observes namespaces when given a list of them
        grants.append(_g("", "namespaces", "list watch", Scope.CLUSTER))
    if cluster_api:
        grants += [
            _g("cluster.x-k8s.io", "machinedeployments", "get list watch patch", served),
            _g("cluster.x-k8s.io", "machinedeployments/scale", "get patch update", served),
            _g("cluster.x-k8s.io", "machines", "get list watch", served),
        ]
    if inference_extension:
        grants += [
            _g("inference.networking.k8s.io", "inferencepools", "get list watch", served),
            _g("inference.networking.x-k8s.io", "inferencepools", "get list watch", served),
        ]
    if karpenter:
        grants += [
            _g("karpenter.sh", "nodepools", "get patch", Scope.CLUSTER),
            _g("karpenter.sh", "nodepools/scale", "get patch", Scope.CLUSTER),
            # Karpenter's ICE Events about cluster-scoped NodeClaims land in "default".
            _g("", "events", "list", Scope.RELEASE, namespace="default"),
            _g("karpenter.sh", "nodeclaims", "get list watch", Scope.CLUSTER),
        ]
    for namespace, names in (secrets or {}).items():
        grants.append(_g("", "secrets", "get", Scope.RELEASE, tuple(sorted(names)), namespace))
    return grants


def grants_from_rules(rules: list[tuple[str, str | None, dict[str, Any]]]) -> set[tuple[Any, ...]]:
    """Flatten rendered rules to (group, resource, verb, role kind, names) tuples."""
    flat = set()
    for kind, _, rule in rules:
        names = tuple(sorted(rule.get("resourceNames", ())))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    flat.add((group, resource, verb, kind, names))
    return flat


def grants_as_tuples(grants: list[Grant], *, cluster_wide: bool) -> set[tuple[Any, ...]]:
    """Flatten the table the same way, with the role kind each scope must come from."""
    flat = set()
    for grant in grants:
        if grant.scope is Scope.CLUSTER or (grant.scope is Scope.SERVED and cluster_wide):
            kind = "ClusterRole"
        else:
            kind = "Role"
        for verb in grant.verbs:
            flat.add((grant.group, grant.resource, verb, kind, grant.names))
    return flat
