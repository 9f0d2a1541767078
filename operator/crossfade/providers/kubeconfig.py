"""Build a kubernetes_asyncio client for another cluster from a kubeconfig stored in a Secret.

Cluster API's convention is a Secret ``<cluster>-kubeconfig`` with the kubeconfig under the
key ``value``; both are defaults here. The kubeconfig's content (tokens, client keys) never
appears in errors or logs: only the Secret's namespace/name and key are named.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.providers.errors import (
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ProviderError,
    ProviderUnavailable,
    Throttled,
)

# What a kubernetes_asyncio call raises when no HTTP status came back.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
)
_T = TypeVar("_T")
KUBECONFIG_SECRET_KEY = "value"  # noqa: S105 (a key name, not a secret)
KUBECONFIG_SECRET_SUFFIX = "-kubeconfig"  # noqa: S105 (a name suffix, not a secret)


def capi_kubeconfig_secret_name(cluster_name: str) -> str:
    """Return the Secret name Cluster API gives a cluster's admin kubeconfig."""
    return f"{cluster_name}{KUBECONFIG_SECRET_SUFFIX}"


async def kube_call(what: str, call: Awaitable[_T]) -> _T:
    """Await one Kubernetes API call; its failures become provider errors naming ``what``."""
    try:
        return await call
    except ApiException as error:
        raise map_api_exception(error, what=what) from None
    except TRANSPORT_ERRORS as error:
        raise ProviderUnavailable(f"{what}: {error!r}") from None


def map_api_exception(error: ApiException, *, what: str) -> ProviderError:
    """Translate a Kubernetes API error into crossfade's typed provider errors."""
    status = int(error.status or 0)
    reason, detail = _status_of(error)
    message = f"{what}: HTTP {status} {detail or error.reason or ''}".rstrip()
    code = reason or str(status)
    if status == 404:
        return NotFound(message, code=code)
    if status in (401, 403):
        return PermissionDenied(message, code=code)
    if status == 429:
        return Throttled(message, code=code, retry_after_s=_retry_after_s(error))
    if status in (400, 409, 422):
        return InvalidRequest(message, code=code)
    return ProviderUnavailable(message, code=code)


def _status_of(error: ApiException) -> tuple[str, str]:
    """Return (reason, message) of the apiserver's Status body, or empty strings."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("reason") or ""), str(body.get("message") or "")


def _retry_after_s(error: ApiException) -> float | None:
    headers: Any = error.headers or {}
    raw = headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def parse_kubeconfig(raw: bytes | str, *, source: str) -> dict[str, Any]:
    """Parse kubeconfig YAML; ``source`` names where it came from (never its content)."""
    try:
        loaded = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InvalidRequest(f"{source} is not valid YAML") from None
    if not isinstance(loaded, dict) or not loaded.get("clusters"):
        raise InvalidRequest(f"{source} is not a kubeconfig (no clusters)")
    return loaded


async def api_client_from_kubeconfig(
    kubeconfig: Mapping[str, Any], *, context: str | None = None
) -> client.ApiClient:
    """Return a new ``ApiClient`` for the kubeconfig's (current) context; close it when done."""
    configuration = client.Configuration()
    try:
        await config.load_kube_config_from_dict(
            dict(kubeconfig), context=context, client_configuration=configuration
        )
    except (config.ConfigException, KeyError, ValueError, TypeError):
        raise InvalidRequest(
            "kubeconfig cannot be loaded (missing context, user or cluster)"
        ) from None
    return client.ApiClient(configuration)


async def read_kubeconfig_secret(
    api: client.ApiClient, *, namespace: str, name: str, key: str = KUBECONFIG_SECRET_KEY
) -> dict[str, Any]:
    """Read and parse the kubeconfig stored under ``key`` in Secret ``namespace/name``."""
    source = f"Secret {namespace}/{name} key {key!r}"
    secret = await kube_call(
        f"read Secret {namespace}/{name}",
        client.CoreV1Api(api).read_namespaced_secret(name, namespace),
    )
    encoded = (secret.data or {}).get(key)
    if encoded is None:
        raise InvalidRequest(f"{source} is missing")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{source} is not base64") from None
    return parse_kubeconfig(raw, source=source)


async def api_client_from_secret(
    api: client.ApiClient, *, namespace: str, name: str, key: str = KUBECONFIG_SECRET_KEY
) -> client.ApiClient:
    """Return an ``ApiClient`` for the cluster whose kubeconfig is in Secret ``namespace/name``."""
    kubeconfig = await read_kubeconfig_secret(api, namespace=namespace, name=name, key=key)
    return await api_client_from_kubeconfig(kubeconfig)


ApiClientSource = Callable[[], Awaitable[client.ApiClient]]


async def close_source(source: ApiClientSource) -> None:
    """Close what a source owns (a kubeconfig-Secret client); shared clients stay open."""
    closer = getattr(source, "aclose", None)
    if closer is not None:
        await closer()


def as_source(api: client.ApiClient | ApiClientSource) -> ApiClientSource:
    """Return ``api`` as a source: a ready client is wrapped, a source is returned as is."""
    if isinstance(api, client.ApiClient):

        async def ready() -> client.ApiClient:
            return api

        return ready
    return api


async def default_api_client() -> client.ApiClient:
    """Return a client for the operator's own cluster: in-cluster config, else ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class SecretKubeconfigClient:
    """An ``ApiClientSource`` that reads a kubeconfig Secret on first use and keeps the client.

    Provider factories are synchronous, so reading the Secret waits for the first call. A
    401 from the remote cluster should be followed by ``reset()`` (the Secret may have been
    rotated); the next call reads it again.
    """

    def __init__(
        self,
        *,
        management: ApiClientSource,
        namespace: str,
        name: str,
        key: str = KUBECONFIG_SECRET_KEY,
    ) -> None:
        self._management = management
        self.namespace, self.name, self.key = namespace, name, key
        self._client: client.ApiClient | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> client.ApiClient:
        async with self._lock:
            if self._client is None:
                management = await self._management()
                self._client = await api_client_from_secret(
                    management, namespace=self.namespace, name=self.name, key=self.key
                )
            return self._client

    async def aclose(self) -> None:
        """Close the client built from the Secret, if any (the next call builds a new one)."""
        await self.reset()

    async def reset(self) -> None:
        async with self._lock:
            if self._client is not None:
                await self._client.close()
                self._client = None
