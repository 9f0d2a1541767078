"""Every object the chart renders is accepted by a real kube-apiserver, and its pod is
admitted under the "restricted" Pod Security Standard enforced by that apiserver."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from crossfade.testing.controlplane import TestCluster
from tests.packaging.chart import VALUES_CASES, pod_spec, render
from tests.packaging.cluster import apply_objects, ensure_namespaces, install_chart_crds

pytestmark = pytest.mark.cluster

WATCHED_NAMESPACES = ("team-a", "team-b")  # named by tests/packaging/values/namespaced-lease.yaml
RESTRICTED_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="module")
def chart_crds(management_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    install_chart_crds(management_cluster, tmp_path_factory.mktemp("crds"))
    ensure_namespaces(management_cluster, WATCHED_NAMESPACES)


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_every_rendered_object_passes_a_strict_server_side_dry_run(
    case: str, management_cluster: TestCluster, chart_crds: None, namespace: str
) -> None:
    rendered = render(release="dry", namespace=namespace, files=VALUES_CASES[case])
    results = apply_objects(management_cluster, rendered.objects, dry_run=True)
    assert [(r["kind"], r["metadata"]["name"]) for r in results] == [
        (o["kind"], o["metadata"]["name"]) for o in rendered.objects
    ]
    # A dry run persists nothing: the Deployment the server just accepted does not exist.
    deployment = rendered.one("Deployment")["metadata"]["name"]
    with management_cluster.api_client() as api, pytest.raises(ApiException) as missing:
        client.AppsV1Api(api).read_namespaced_deployment(deployment, namespace)
    assert missing.value.status == 404


def test_strict_dry_run_rejects_a_misspelt_field(
    management_cluster: TestCluster, chart_crds: None, namespace: str
) -> None:
    deployment = copy.deepcopy(render(namespace=namespace).one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFileSystem"
    ] = True
    with pytest.raises(ApiException) as rejected:
        apply_objects(management_cluster, [deployment], dry_run=True)
    # Server-side apply refuses a field outside the schema (it answers 500 for this).
    message = json.loads(rejected.value.body or "{}")["message"]
    assert "readOnlyRootFileSystem: field not declared in schema" in message


def _pod_from_template(rendered_pod_spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "crossfade-pss-probe", "namespace": namespace},
        "spec": copy.deepcopy(rendered_pod_spec),
    }


def _restricted_namespace(
    cluster: TestCluster, namespace: str, rendered_sa: dict[str, Any]
) -> None:
    with cluster.api_client() as api:
        client.CoreV1Api(api).patch_namespace(
            namespace, {"metadata": {"labels": RESTRICTED_LABELS}}
        )
    # The ServiceAccount admission plugin wants the pod's account to exist.
    apply_objects(cluster, [rendered_sa], dry_run=False)


def _create_pod_dry_run(cluster: TestCluster, pod: dict[str, Any]) -> None:
    body: Any = pod  # the client serialises a plain manifest as it is
    with cluster.api_client() as api:
        client.CoreV1Api(api).create_namespaced_pod(
            pod["metadata"]["namespace"], body, dry_run="All"
        )


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_operator_pod_is_admitted_under_enforced_restricted_pod_security(
    case: str, management_cluster: TestCluster, chart_crds: None, namespace: str
) -> None:
    rendered = render(namespace=namespace, files=VALUES_CASES[case])
    _restricted_namespace(management_cluster, namespace, rendered.one("ServiceAccount"))
    _create_pod_dry_run(management_cluster, _pod_from_template(pod_spec(rendered), namespace))


@pytest.mark.parametrize(
    ("weakening", "violation"),
    [
        ("allowPrivilegeEscalation", "allowPrivilegeEscalation"),
        ("capabilities", "unrestricted capabilities"),
        ("runAsNonRoot", "runAsNonRoot"),
        ("seccompProfile", "seccompProfile"),
    ],
)
def test_the_same_apiserver_refuses_a_weakened_operator_pod(
    weakening: str,
    violation: str,
    management_cluster: TestCluster,
    chart_crds: None,
    namespace: str,
) -> None:
    rendered = render(namespace=namespace)
    _restricted_namespace(management_cluster, namespace, rendered.one("ServiceAccount"))
    pod = _pod_from_template(pod_spec(rendered), namespace)
    container_ctx = pod["spec"]["containers"][0]["securityContext"]
    if weakening == "allowPrivilegeEscalation":
        container_ctx["allowPrivilegeEscalation"] = True
    elif weakening == "capabilities":
        container_ctx["capabilities"] = {"add": ["NET_ADMIN"]}
    elif weakening == "runAsNonRoot":
        container_ctx.pop("runAsNonRoot")
        pod["spec"]["securityContext"].pop("runAsNonRoot")
    else:
        container_ctx.pop("seccompProfile")
        pod["spec"]["securityContext"].pop("seccompProfile")
    with pytest.raises(ApiException) as refused:
        _create_pod_dry_run(management_cluster, pod)
    assert refused.value.status == 403
    message = json.loads(refused.value.body or "{}")["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert violation in message
