"""The chart's RBAC, applied to a real kube-apiserver, allows exactly the permission table.

Every granted verb is asked of the real RBAC authorizer (SubjectAccessReview for the chart's
ServiceAccount) and must be allowed; every other verb on the same resources, the same verbs
outside their namespaces or names, and a list of powerful verbs an operator must never hold
must be forbidden.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from crossfade.testing.controlplane import TestCluster
from tests.packaging.chart import VALUES_CASES, render
from tests.packaging.cluster import apply_objects, ensure_namespaces
from tests.packaging.rbac_table import (
    RBAC_CASES,
    STANDARD_VERBS,
    Grant,
    Scope,
    expected_grants,
)

pytestmark = pytest.mark.cluster

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
WATCHED_NAMESPACES = ("team-a", "team-b")
ELSEWHERE = "not-served"  # a namespace the operator does not serve (need not exist for SAR)
SOME_OBJECT = "some-object"
OTHER_OBJECT = "someone-elses"


@dataclass(frozen=True)
class Ask:
    """One question to the authorizer and the answer the table demands."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    allowed: bool = True

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        group = self.group or "core"
        where = f" in {self.namespace}" if self.namespace else ""
        named = f" named {self.name}" if self.name else ""
        answer = "allowed" if self.allowed else "forbidden"
        return f"{self.verb} {group}/{what}{named}{where} should be {answer}"


# Verbs that would let the operator become more than it is; none may be allowed anywhere.
def never_allowed(release_ns: str, *, cluster_wide: bool) -> list[Ask]:
    asks = [
        Ask("list", "", "secrets", namespace=release_ns),
        Ask("watch", "", "secrets", namespace=release_ns),
        Ask("get", "", "secrets", namespace=release_ns, name=OTHER_OBJECT),
        Ask("get", "", "secrets", namespace="kube-system", name="anything"),
        Ask("create", "", "pods", namespace=release_ns),
        Ask("create", "", "pods", subresource="exec", namespace=release_ns, name=SOME_OBJECT),
        Ask("get", "", "configmaps", namespace=release_ns, name=SOME_OBJECT),
        Ask("create", "", "serviceaccounts", subresource="token", namespace=release_ns),
        Ask("patch", "apps", "deployments", namespace=release_ns, name=SOME_OBJECT),
        Ask("get", "", "nodes", subresource="proxy", name=SOME_OBJECT),
        Ask("patch", "", "nodes", name=SOME_OBJECT),
        Ask("escalate", "rbac.authorization.k8s.io", "clusterroles", name=SOME_OBJECT),
        Ask("bind", "rbac.authorization.k8s.io", "clusterroles", name=SOME_OBJECT),
        Ask("escalate", "rbac.authorization.k8s.io", "roles", namespace=release_ns),
        Ask("bind", "rbac.authorization.k8s.io", "roles", namespace=release_ns),
        Ask("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
        Ask("impersonate", "", "users", name="admin"),
        Ask("impersonate", "", "groups", name="system:masters"),
        Ask("impersonate", "", "serviceaccounts", namespace="kube-system", name="default"),
        Ask("create", "apiextensions.k8s.io", "customresourcedefinitions"),
        Ask(
            "approve", "certificates.k8s.io", "signers", name="kubernetes.io/kube-apiserver-client"
        ),
        Ask("create", "admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ]
    if cluster_wide:  # serving every namespace, kopf has no reason to list them
        asks.append(Ask("list", "", "namespaces"))
    return [dataclasses.replace(a, allowed=False) for a in asks]


def _namespaces_for(
    grant: Grant, *, release_ns: str, cluster_wide: bool
) -> tuple[list[str], list[str]]:
    """Return (namespaces where the grant holds, namespaces where it must not)."""
    if grant.scope is Scope.CLUSTER:
        return [""], []
    if grant.scope is Scope.RELEASE:
        return [grant.namespace or release_ns], [ELSEWHERE]
    if cluster_wide:
        return [release_ns, ELSEWHERE], []
    return list(WATCHED_NAMESPACES), [ELSEWHERE, release_ns]


def _name_for(verb: str) -> str:
    return "" if verb in ("list", "watch", "create", "deletecollection") else SOME_OBJECT


def _ask(grant: Grant, verb: str, namespace: str, name: str, *, allowed: bool = True) -> Ask:
    return Ask(verb, grant.group, grant.plural, grant.subresource, namespace, name, allowed)


def questions(grants: list[Grant], *, release_ns: str, cluster_wide: bool) -> list[Ask]:
    """Turn the permission table into the questions that prove it exactly."""
    asks: list[Ask] = []

    # (group, resource, namespace) -> every verb some grant allows there
    def verbs_where(group: str, resource: str, namespace: str) -> set[str]:
        """Every verb some grant allows on this resource in this namespace."""
        verbs: set[str] = set()
        for grant in grants:
            if (grant.group, grant.resource) != (group, resource):
                continue
            inside, _ = _namespaces_for(grant, release_ns=release_ns, cluster_wide=cluster_wide)
            everywhere = grant.scope is Scope.SERVED and cluster_wide
            if everywhere or namespace in inside:
                verbs |= grant.verbs
        return verbs

    for grant in grants:
        inside, outside = _namespaces_for(grant, release_ns=release_ns, cluster_wide=cluster_wide)

        for namespace in inside:
            for verb in sorted(grant.verbs):
                names = grant.names or (_name_for(verb),)
                asks += [_ask(grant, verb, namespace, n) for n in names]
                if grant.names:  # the same verb on another object of the kind is refused
                    asks.append(_ask(grant, verb, namespace, OTHER_OBJECT, allowed=False))
            granted_anyhow = verbs_where(grant.group, grant.resource, namespace)
            for verb in sorted(set(STANDARD_VERBS) - granted_anyhow):
                asks.append(_ask(grant, verb, namespace, _name_for(verb), allowed=False))
        for namespace in outside:
            for verb in sorted(grant.verbs):
                name = grant.names[0] if grant.names else _name_for(verb)
                asks.append(_ask(grant, verb, namespace, name, allowed=False))
    return asks


def ask_authorizer(
    cluster: TestCluster, *, user: str, groups: list[str], asks: list[Ask]
) -> list[str]:
    """Return the questions whose real answer differs from the table's."""
    wrong = []
    with cluster.api_client() as api:
        authz = client.AuthorizationV1Api(api)
        for ask in asks:
            review = authz.create_subject_access_review(
                client.V1SubjectAccessReview(
                    spec=client.V1SubjectAccessReviewSpec(
                        user=user,
                        groups=groups,
                        resource_attributes=client.V1ResourceAttributes(
                            verb=ask.verb,
                            group=ask.group,
                            resource=ask.resource,
                            subresource=ask.subresource or None,
                            namespace=ask.namespace or None,
                            name=ask.name or None,
                        ),
                    )
                )
            )
            assert review.status is not None
            if bool(review.status.allowed) != ask.allowed:
                wrong.append(str(ask))
    return wrong


def install_rbac(cluster: TestCluster, *, namespace: str, case: str) -> tuple[str, str]:
    """Apply the chart's ServiceAccount and RBAC for real; return (release, account name)."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    rendered = render(release=release, namespace=namespace, files=VALUES_CASES[case])
    objects: list[dict[str, Any]] = [o for o in rendered.objects if o["kind"] in RBAC_KINDS]
    apply_objects(cluster, objects, dry_run=False)
    return release, rendered.one("ServiceAccount")["metadata"]["name"]


@pytest.mark.parametrize("case", sorted(RBAC_CASES))
def test_real_authorizer_allows_exactly_the_permission_table(
    case: str, management_cluster: TestCluster, namespace: str
) -> None:
    ensure_namespaces(management_cluster, WATCHED_NAMESPACES)
    _, account = install_rbac(management_cluster, namespace=namespace, case=case)
    settings = RBAC_CASES[case]
    cluster_wide = settings.get("cluster_wide", True)
    asks = questions(expected_grants(**settings), release_ns=namespace, cluster_wide=cluster_wide)
    asks += never_allowed(namespace, cluster_wide=cluster_wide)
    assert sum(a.allowed for a in asks) > 20 and sum(not a.allowed for a in asks) > 50
    wrong = ask_authorizer(
        management_cluster,
        user=f"system:serviceaccount:{namespace}:{account}",
        groups=[
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        ],
        asks=asks,
    )
    assert wrong == [], f"{len(wrong)} of {len(asks)} answers differ:\n" + "\n".join(wrong)


def test_without_the_chart_rbac_the_same_questions_are_all_refused(
    management_cluster: TestCluster, namespace: str
) -> None:
    """The proof can fail: an account without the chart's bindings gets no 'allowed'."""
    grants = expected_grants()
    asks = [
        dataclasses.replace(a, allowed=False)
        for a in questions(grants, release_ns=namespace, cluster_wide=True)
        if a.allowed
    ]
    wrong = ask_authorizer(
        management_cluster,
        user=f"system:serviceaccount:{namespace}:unbound",
        groups=["system:serviceaccounts", "system:authenticated"],
        asks=asks,
    )
    assert wrong == []
