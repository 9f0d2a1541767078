"""The operator's own code paths work when authenticated as the chart's ServiceAccount.

A real token for the account (TokenRequest) drives the HTTPRoute router, the kubeconfig
Secret reader, the Lease elector and Events on a real apiserver,
with only the chart's RBAC behind it; the same identity is refused what the chart does not
grant.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio import client as aclient

from crossfade.handlers.leadership import LEASE_DURATION_S, LeaseElector, LeaseRef
from crossfade.providers.errors import PermissionDenied
from crossfade.providers.kubeconfig import KUBECONFIG_SECRET_KEY, read_kubeconfig_secret
from crossfade.routers.httproute import (
    GATEWAY_GROUP,
    HTTPROUTE_PLURAL,
    HTTPROUTE_VERSION,
    BackendRef,
    HTTPRouteRouter,
    HTTPRouteTarget,
)
from crossfade.testing.controlplane import TestCluster, upstream_crds
from tests.packaging.chart import render
from tests.packaging.cluster import (
    apply_objects,
    install_chart_crds,
    service_account_token,
    wait_until_served,
)

pytestmark = pytest.mark.cluster

KUBECONFIG_SECRET = "gke-standby-kubeconfig"
LEASE_NAME = "crossfade-leader"  # the chart's default leaderElection.leaseName
TOKEN_LIFETIME_S = 600
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@pytest.fixture(scope="module")
def crds(management_cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    install_chart_crds(management_cluster, tmp_path_factory.mktemp("crds"))
    names = management_cluster.install_crds(
        [*upstream_crds("gateway-api"), *upstream_crds("inference-extension")]
    )
    wait_until_served(management_cluster, names)


@pytest.fixture
def operator_account(management_cluster: TestCluster, crds: None, namespace: str) -> str:
    """Install the chart's RBAC; return a token of its ServiceAccount."""
    rendered = render(
        release=f"identity-{uuid.uuid4().hex[:6]}",
        namespace=namespace,
        sets={"rbac.secrets[0].name": KUBECONFIG_SECRET},
    )
    apply_objects(
        management_cluster,
        [o for o in rendered.objects if o["kind"] in RBAC_KINDS],
        dry_run=False,
    )
    account = rendered.one("ServiceAccount")["metadata"]["name"]
    return service_account_token(
        management_cluster, namespace=namespace, account=account, lifetime_s=TOKEN_LIFETIME_S
    )


@pytest.fixture
def as_operator(management_cluster: TestCluster, operator_account: str) -> Iterator[Any]:
    config = client.Configuration()
    config.host = management_cluster.server
    assert management_cluster.credentials is not None
    config.ssl_ca_cert = str(management_cluster.credentials.ca_cert)
    config.api_key = {"authorization": f"Bearer {operator_account}"}
    with client.ApiClient(config) as api:
        yield api


@pytest.fixture
async def as_operator_async(
    management_cluster: TestCluster, operator_account: str
) -> AsyncIterator[Any]:
    config = aclient.Configuration()
    config.host = management_cluster.server
    assert management_cluster.credentials is not None
    config.ssl_ca_cert = str(management_cluster.credentials.ca_cert)
    config.api_key = {"BearerToken": operator_account}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    api = aclient.ApiClient(config)
    try:
        yield api
    finally:
        await api.close()


def _route_with_two_backends(namespace: str) -> list[dict[str, Any]]:
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8000}]},
        }
        for name in ("llm-aws", "llm-gcp")
    ]
    route = {
        "apiVersion": f"{GATEWAY_GROUP}/{HTTPROUTE_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "inference-gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "llm-aws", "port": 8000, "weight": 1},
                        {"name": "llm-gcp", "port": 8000, "weight": 1},
                    ]
                }
            ],
        },
    }
    return [*services, route]


async def test_operator_account_shifts_httproute_weights_with_the_real_router(
    management_cluster: TestCluster, namespace: str, as_operator_async: Any
) -> None:
    management_cluster.apply_manifest(_route_with_two_backends(namespace))
    target = HTTPRouteTarget(
        namespace=namespace,
        name="chat",
        backends=(
            BackendRef(placement="aws", name="llm-aws", port=8000),
            BackendRef(placement="gcp", name="llm-gcp", port=8000),
        ),
    )
    router = HTTPRouteRouter(api_client=as_operator_async, target=target)
    before = await router.read()
    assert before.weights == {"aws": 50, "gcp": 50}
    await router.apply({"aws": 0, "gcp": 100})
    with management_cluster.api_client() as api:
        route: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GATEWAY_GROUP, HTTPROUTE_VERSION, namespace, HTTPROUTE_PLURAL, "chat"
        )
    weights = [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]
    assert weights[0] == 0 and weights[1] > 0


async def test_operator_account_reads_only_the_secrets_named_in_values(
    management_cluster: TestCluster, namespace: str, as_operator_async: Any
) -> None:
    kubeconfig = yaml.safe_dump(management_cluster.kubeconfig_dict(context_name="standby"))
    encoded = base64.b64encode(kubeconfig.encode()).decode()
    management_cluster.apply_manifest(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {KUBECONFIG_SECRET_KEY: encoded},
            }
            for name in (KUBECONFIG_SECRET, "unrelated-credentials")
        ]
    )
    loaded = await read_kubeconfig_secret(
        as_operator_async, namespace=namespace, name=KUBECONFIG_SECRET
    )
    assert loaded["current-context"] == "standby"
    with pytest.raises(PermissionDenied):
        await read_kubeconfig_secret(
            as_operator_async, namespace=namespace, name="unrelated-credentials"
        )


def _status(exc: ApiException) -> int:
    return int(exc.status or 0)


async def test_operator_account_runs_the_real_lease_election(
    namespace: str, as_operator_async: Any
) -> None:
    # Lease times are MicroTime: a whole second would serialise without the fraction
    # the apiserver insists on, so the fake clock carries microseconds like the real one.
    now = datetime.datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=datetime.UTC)

    def elector(identity: str) -> LeaseElector:
        ref = LeaseRef(namespace=namespace, name=LEASE_NAME, identity=identity)
        return LeaseElector(api_client=as_operator_async, ref=ref, clock=lambda: now)

    active, standby = elector("replica-a"), elector("replica-b")
    assert await active.try_acquire_or_renew()  # create
    assert await active.try_acquire_or_renew()  # get + update (renew)
    assert not await standby.try_acquire_or_renew()  # held and fresh
    now += datetime.timedelta(seconds=LEASE_DURATION_S + 1)
    assert await standby.try_acquire_or_renew()  # expired: taken over with update
    assert standby.transitions == 1


def test_operator_account_posts_events(namespace: str, as_operator: Any) -> None:
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="crossfade-"),
        involved_object=client.V1ObjectReference(
            kind="InferencePool", name="chat", namespace=namespace
        ),
        reason="FailedOver",
        message="traffic moved to gcp",
        type="Normal",
    )
    assert client.CoreV1Api(as_operator).create_namespaced_event(namespace, event).metadata.name


@pytest.mark.parametrize(
    "forbidden",
    [
        "list-secrets",
        "other-lease",
        "lease-elsewhere",
        "delete-route",
        "create-pod",
    ],
)
def test_operator_account_is_refused_what_the_chart_does_not_grant(
    forbidden: str, namespace: str, as_operator: Any
) -> None:
    core = client.CoreV1Api(as_operator)
    custom = client.CustomObjectsApi(as_operator)
    coordination = client.CoordinationV1Api(as_operator)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name=LEASE_NAME))
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    actions: dict[str, Callable[[], object]] = {
        "list-secrets": lambda: core.list_namespaced_secret(namespace),
        "other-lease": lambda: coordination.patch_namespaced_lease(
            "kube-controller-manager", namespace, {"spec": {"holderIdentity": "me"}}
        ),
        "lease-elsewhere": lambda: coordination.create_namespaced_lease("kube-system", lease),
        "delete-route": lambda: custom.delete_namespaced_custom_object(
            GATEWAY_GROUP, HTTPROUTE_VERSION, namespace, HTTPROUTE_PLURAL, "chat"
        ),
        "create-pod": lambda: core.create_namespaced_pod(namespace, pod),
    }
    with pytest.raises(ApiException) as refused:
        actions[forbidden]()
    assert _status(refused.value) == 403, json.loads(refused.value.body or "{}")
