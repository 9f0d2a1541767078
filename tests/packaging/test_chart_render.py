"""The chart renders and lints with the real helm binary, and what it renders is locked down."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from crossfade.testing.controlplane import REPO_ROOT
from tests.packaging.chart import (
    CHART_DIR,
    KUBE_VERSION,
    VALUES_CASES,
    HelmError,
    helm,
    pod_spec,
    rbac_rules,
    render,
    values_args,
)
from tests.packaging.rbac_table import (
    RBAC_CASES,
    expected_grants,
    grants_as_tuples,
    grants_from_rules,
)

FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_helm_lint_passes_strictly(case: str) -> None:
    result = helm(
        "lint",
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        str(CHART_DIR),
        *values_args(VALUES_CASES[case]),
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"replicaCount": "0"}, "/replicaCount"),
        ({"leaderElection.enabled": "maybe"}, "/leaderElection/enabled"),
        ({"httpPort": "70000"}, "/httpPort"),
        ({"image.digest": "latest"}, "/image/digest"),
        ({"rbac.wildcards": "true"}, "additional properties 'wildcards' not allowed"),
        ({"watchNamespaces[0]": "Not_A_Namespace"}, "/watchNamespaces/0"),
        ({"serviceAccount.aws.roleArn": "my-role"}, "/serviceAccount/aws/roleArn"),
    ],
)
def test_values_schema_rejects_nonsense_with_the_path(sets: dict[str, str], complaint: str) -> None:
    result = helm(
        "template",
        "cf",
        str(CHART_DIR),
        "--kube-version",
        KUBE_VERSION,
        *values_args((), sets),
        check=False,
    )
    assert result.returncode != 0
    assert complaint in result.stderr


def test_chart_crds_are_the_repository_crds_byte_for_byte() -> None:
    top_level = {path.name: path.read_bytes() for path in (REPO_ROOT / "crds").glob("*.yaml")}
    in_chart = {path.name: path.read_bytes() for path in (CHART_DIR / "crds").glob("*.yaml")}
    assert "inferencepools.crossfade.dev.yaml" in top_level, "crds/ has no InferencePool CRD"
    assert set(in_chart) == set(top_level)
    for name, content in top_level.items():
        assert in_chart[name] == content, f"helm/crossfade/crds/{name} differs from crds/{name}"


def test_default_install_is_two_replicas_one_active_with_a_pdb_and_spread() -> None:
    rendered = render(namespace="ops")
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "--health-port=8080",
        "--lease-namespace=ops",
        "--lease-name=crossfade-leader",
        "--reaper-interval-seconds=600",
        "--reaper-grace-period-seconds=3600",
    ]
    pod_name = next(env for env in container["env"] if env["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert rendered.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    spread = pod_spec(rendered)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_pod_meets_the_restricted_pod_security_standard(case: str) -> None:
    spec = pod_spec(render(files=VALUES_CASES[case]))
    pod_ctx = spec["securityContext"]
    assert pod_ctx["runAsNonRoot"] is True
    assert pod_ctx["runAsUser"] > 0
    assert pod_ctx["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    for container in spec["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx.get("privileged", False) is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert "livenessProbe" in container and "readinessProbe" in container
    volume_types = {key for volume in spec["volumes"] for key in volume if key != "name"}
    assert volume_types <= {"emptyDir", "projected"}, "only restricted volume types"


def test_api_token_is_short_lived_and_projected_only_into_the_operator() -> None:
    rendered = render()
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    spec = pod_spec(rendered)
    projected = next(v["projected"] for v in spec["volumes"] if "projected" in v)
    token = next(
        s["serviceAccountToken"] for s in projected["sources"] if "serviceAccountToken" in s
    )
    assert token["expirationSeconds"] <= 3607
    mounts = spec["containers"][0]["volumeMounts"]
    api_mount = next(m for m in mounts if m["name"] == "kube-api-access")
    assert api_mount["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert api_mount["readOnly"] is True


def test_cloud_identity_annotations_land_on_the_service_account() -> None:
    annotations = render(files=VALUES_CASES["production"]).one("ServiceAccount")["metadata"][
        "annotations"
    ]
    assert annotations["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::123456789012:role/crossfade-operator"
    )
    assert annotations["iam.gke.io/gcp-service-account"] == (
        "crossfade@my-project.iam.gserviceaccount.com"
    )
    assert "annotations" not in render().one("ServiceAccount")["metadata"]


def test_digest_replaces_the_tag() -> None:
    production = render(files=VALUES_CASES["production"])
    image = pod_spec(production)["containers"][0]["image"]
    assert image.startswith("registry.example.com/crossfade/operator@sha256:")
    assert pod_spec(render())["containers"][0]["image"].endswith(":0.1.0")


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_rbac_has_no_wildcards_and_no_privilege_escalation_verbs(case: str) -> None:
    rules = rbac_rules(render(files=VALUES_CASES[case]))
    assert rules
    for _, _, rule in rules:
        assert FORBIDDEN_VERBS.isdisjoint(rule["verbs"]), rule
        assert "*" not in rule["apiGroups"] and "*" not in rule["resources"], rule
        assert "nonResourceURLs" not in rule, rule


@pytest.mark.parametrize("case", sorted(VALUES_CASES))
def test_secrets_are_readable_only_by_name(case: str) -> None:
    for _, _, rule in rbac_rules(render(files=VALUES_CASES[case])):
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"]
            assert rule["resourceNames"], "a Secret rule must name its Secrets"
            assert rule["resources"] == ["secrets"]


def test_watch_namespaces_switches_to_roles_in_exactly_those_namespaces() -> None:
    rendered = render(files=VALUES_CASES["namespaced"])
    namespaced_roles = {
        role["metadata"]["namespace"]
        for role in rendered.of_kind("Role")
        if any("inferencepools" in rule["resources"] for rule in role["rules"])
    }
    assert namespaced_roles == {"team-a", "team-b"}
    cluster_rules = [rule for kind, _, rule in rbac_rules(rendered) if kind == "ClusterRole"]
    cluster_resources = {res for rule in cluster_rules for res in rule["resources"]}
    assert cluster_resources == {"nodes", "customresourcedefinitions", "namespaces"}
    args = pod_spec(rendered)["containers"][0]["args"]
    assert args[:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--lease-name=crossfade-team-leader" in args


def test_single_replica_without_leader_election_has_no_lease_and_no_pdb() -> None:
    rendered = render(sets={"leaderElection.enabled": "false", "replicaCount": "1"})
    assert "--no-leader-election" in pod_spec(rendered)["containers"][0]["args"]
    assert "PodDisruptionBudget" not in rendered.kinds()
    leases = [rule for _, _, rule in rbac_rules(rendered) if "leases" in rule["resources"]]
    assert leases == []


def test_two_active_replicas_are_refused() -> None:
    with pytest.raises(HelmError, match=r"set replicaCount to 1"):
        render(sets={"leaderElection.enabled": "false"})


def test_optional_objects_follow_their_switches() -> None:
    default = render()
    assert "NetworkPolicy" not in default.kinds()
    assert "ServiceMonitor" not in default.kinds()
    production = render(files=VALUES_CASES["production"])
    assert {"NetworkPolicy", "ServiceMonitor", "Service"} <= production.kinds()
    monitor = production.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0] == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
    }
    assert "Service" not in render(files=VALUES_CASES["namespaced"]).kinds()


def test_network_policy_allows_only_dns_apis_probes_and_metrics() -> None:
    policy = render(files=VALUES_CASES["production"]).one("NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    egress_ports = {
        (port["port"], port["protocol"]) for rule in policy["egress"] for port in rule["ports"]
    }
    assert egress_ports == {
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (6443, "TCP"),
        (80, "TCP"),
        (8000, "TCP"),
        (8080, "TCP"),
    }


def test_rendered_arguments_are_accepted_by_the_real_cli_parser() -> None:
    from crossfade.cli import build_parser

    for case, files in VALUES_CASES.items():
        args = pod_spec(render(namespace="ops", files=files))["containers"][0]["args"]
        parsed = build_parser().parse_args(["run", *args])
        assert parsed.health_port == 8080, case
        assert parsed.lease_namespace == "ops", case
    namespaced = pod_spec(render(files=VALUES_CASES["namespaced"]))["containers"][0]["args"]
    assert build_parser().parse_args(["run", *namespaced]).namespace == ["team-a", "team-b"]


def test_service_monitor_without_a_service_fails_with_a_reason() -> None:
    with pytest.raises(HelmError, match=r"needs metrics\.service\.enabled"):
        render(sets={"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"})


def test_values_file_documents_every_key_in_the_readme() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    readme = (CHART_DIR / "README.md").read_text()

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if isinstance(node, dict) and node:
            return [key for k, v in node.items() for key in leaves(v, f"{prefix}{k}.")]
        return [prefix.rstrip(".")]

    missing = [key for key in leaves(values) if f"`{key}`" not in readme]
    assert not missing, f"README.md lacks a row for {missing}"


def test_schema_and_values_agree() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


@pytest.mark.parametrize("case", sorted(RBAC_CASES))
def test_rendered_rbac_is_exactly_the_permission_table(case: str) -> None:
    settings = RBAC_CASES[case]
    rendered = grants_from_rules(rbac_rules(render(files=VALUES_CASES[case])))
    expected = grants_as_tuples(
        expected_grants(**settings), cluster_wide=settings.get("cluster_wide", True)
    )
    assert rendered - expected == set(), "granted but not in the table"
    assert expected - rendered == set(), "in the table but not granted"
