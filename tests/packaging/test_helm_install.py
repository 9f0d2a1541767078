"""The real helm binary installs, upgrades and uninstalls the chart on a real kube-apiserver,
and what docs/install.md says about each step holds."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from crossfade.testing.controlplane import TestCluster
from tests.packaging.chart import CHART_DIR, helm

pytestmark = pytest.mark.cluster

CRD_NAME = "inferencepools.crossfade.dev"
NEW_DIGEST = "sha256:" + "ab" * 32


def _helm(cluster: TestCluster, *args: str) -> str:
    return helm(*args, "--kubeconfig", str(cluster.kubeconfig_path)).stdout


def test_install_upgrade_uninstall_on_a_real_apiserver(
    management_cluster: TestCluster, namespace: str
) -> None:
    release = f"cf-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-crossfade"
    installed = _helm(management_cluster, "install", release, str(CHART_DIR), "-n", namespace)
    assert "STATUS: deployed" in installed
    # NOTES.txt tells the installer how to find the active replica and what Secrets need.
    assert "get lease crossfade-leader" in installed
    assert "rbac.secrets" in installed

    with management_cluster.api_client() as api:
        apps, rbac = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
        ext = client.ApiextensionsV1Api(api)
        deployment = apps.read_namespaced_deployment(fullname, namespace)
        assert deployment.spec.replicas == 2
        assert rbac.read_cluster_role(fullname).rules
        assert ext.read_custom_resource_definition(CRD_NAME).spec.group == "crossfade.dev"

    upgraded = _helm(
        management_cluster,
        "upgrade",
        release,
        str(CHART_DIR),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "replicaCount=3",
        "--set",
        f"image.digest={NEW_DIGEST}",
    )
    assert "REVISION: 2" in upgraded
    with management_cluster.api_client() as api:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(fullname, namespace)
    assert deployment.spec.replicas == 3
    pod = deployment.spec.template.spec
    assert pod is not None
    assert str(pod.containers[0].image).endswith(f"@{NEW_DIGEST}")

    _helm(management_cluster, "uninstall", release, "-n", namespace)
    with management_cluster.api_client() as api:
        apps, rbac = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
        ext = client.ApiextensionsV1Api(api)
        for read in (
            lambda: apps.read_namespaced_deployment(fullname, namespace),
            lambda: rbac.read_cluster_role(fullname),
            lambda: rbac.read_cluster_role_binding(fullname),
        ):
            with pytest.raises(ApiException) as gone:
                read()
            assert gone.value.status == 404
        # Helm keeps CRDs from crds/ on uninstall: deleting one would delete every pool.
        kept = ext.read_custom_resource_definition(CRD_NAME)
        assert kept.metadata is not None and kept.metadata.name == CRD_NAME
