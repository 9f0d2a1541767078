"""Proofs that the test control plane is a real kube-apiserver: CEL, RBAC, server-side apply."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crossfade.testing.controlplane import TestCluster

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.proof.crossfade.dev"},
    "spec": {
        "group": "proof.crossfade.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "spec.min must be <= spec.max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
    return {
        "apiVersion": "proof.crossfade.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"min": lo, "max": hi},
    }


@pytest.fixture(scope="module")
def widget_crd(management_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("crd") / "widgets.yaml"
    path.write_text(json.dumps(WIDGET_CRD))
    management_cluster.install_crds([path])


def test_cel_rule_rejects_bad_object_with_servers_message(
    management_cluster: TestCluster, widget_crd: None, namespace: str
) -> None:
    with management_cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            "proof.crossfade.dev", "v1", namespace, "widgets", widget("good", 1, 2)
        )
        with pytest.raises(ApiException) as rejected:
            custom.create_namespaced_custom_object(
                "proof.crossfade.dev", "v1", namespace, "widgets", widget("bad", 3, 2)
            )
    assert rejected.value.status == 422
    body = json.loads(rejected.value.body)
    assert body["reason"] == "Invalid"
    assert "spec.min must be <= spec.max" in body["message"]


def test_service_account_without_rbac_is_forbidden(
    management_cluster: TestCluster, namespace: str
) -> None:
    with management_cluster.api_client() as admin:
        core = client.CoreV1Api(admin)
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
        )
        token = core.create_namespaced_service_account_token(
            "nobody",
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            ),
        ).status.token
    config = client.Configuration()
    config.host = management_cluster.server
    assert management_cluster.credentials is not None
    config.ssl_ca_cert = str(management_cluster.credentials.ca_cert)
    config.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(config) as as_nobody:
        with pytest.raises(ApiException) as forbidden:
            client.CoreV1Api(as_nobody).list_namespaced_secret(namespace)
        # The same identity can authenticate: who-am-I answers with the service account.
        review = client.AuthenticationV1Api(as_nobody).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    assert forbidden.value.status == 403
    assert (
        f"system:serviceaccount:{namespace}:nobody" in json.loads(forbidden.value.body)["message"]
    )
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:nobody"


def test_server_side_apply_reports_field_manager_conflict(
    management_cluster: TestCluster, namespace: str
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "owned", "namespace": namespace},
        "data": {"weight": "100"},
    }
    with management_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.patch_namespaced_config_map(
            "owned",
            namespace,
            config_map,
            field_manager="gitops",
            _content_type="application/apply-patch+yaml",
        )
        contender = {**config_map, "data": {"weight": "0"}}
        with pytest.raises(ApiException) as conflict:
            core.patch_namespaced_config_map(
                "owned",
                namespace,
                contender,
                field_manager="crossfade",
                _content_type="application/apply-patch+yaml",
            )
        stored = core.read_namespaced_config_map("owned", namespace)
    assert conflict.value.status == 409
    body = json.loads(conflict.value.body)
    assert body["reason"] == "Conflict"
    assert 'conflict with "gitops"' in body["message"]
    assert stored.data == {"weight": "100"}
    managers = {entry.manager for entry in stored.metadata.managed_fields}
    assert "gitops" in managers and "crossfade" not in managers


def test_clusters_are_isolated(cloud_clusters: dict[str, TestCluster]) -> None:
    aws, gcp = cloud_clusters["aws"], cloud_clusters["gcp"]
    assert aws.server != gcp.server
    with aws.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="only-in-aws"))
        )
    with gcp.api_client() as api:
        names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace().items}
    assert "only-in-aws" not in names
    assert "default" in names
