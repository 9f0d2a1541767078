"""Check that the bootstrap and infrastructure templates a MachineDeployment will name exist.

Cluster API v1beta2 references carry ``apiGroup``, ``kind`` and ``name``; the controllers find
the version in the CRD's contract labels. crossfade only needs to know a template exists before
it creates a MachineDeployment pointing at it, so it asks API discovery (open to every
authenticated identity) for the group's preferred version and the kind's resource name, then
GETs the object. A missing template becomes ``InvalidRequest`` (``TemplateNotFound``) at create
time instead of a MachineDeployment whose Machines never appear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from crossfade.providers.errors import InvalidRequest, ProviderUnavailable
from crossfade.providers.kubeconfig import TRANSPORT_ERRORS, ApiClientSource, map_api_exception

NOT_FOUND = 404
_DISCOVERY_OPTIONS: dict[str, Any] = {
    "auth_settings": ["BearerToken"],
    "_return_http_data_only": True,
}


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A contract-versioned reference (``apiGroup``, ``kind``, ``name``) of Cluster API v1beta2."""

    api_group: str
    kind: str
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"apiGroup": self.api_group, "kind": self.kind, "name": self.name}

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> TemplateRef:
        return cls(api_group=str(wire["apiGroup"]), kind=str(wire["kind"]), name=str(wire["name"]))

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_group} {self.name}"


@dataclass(frozen=True, slots=True)
class ServedResource:
    """Where discovery says a kind is served: the version and the resource (plural) name."""

    version: str
    plural: str


class TemplateChecker:
    """Resolves template kinds through discovery (cached per kind) and checks objects exist."""

    def __init__(self, api: ApiClientSource) -> None:
        self._api = api
        self._served: dict[tuple[str, str], ServedResource] = {}

    async def _discover(self, ref: TemplateRef, path: str, response_type: str) -> Any:
        api = await self._api()
        try:
            return await api.call_api(
                path, "GET", response_types_map={200: response_type}, **_DISCOVERY_OPTIONS
            )
        except ApiException as error:
            if error.status == NOT_FOUND:
                raise InvalidRequest(
                    f"{ref}: API group {ref.api_group} is not served by the cluster (is its "
                    "Cluster API provider installed?)",
                    code="TemplateKindNotServed",
                ) from None
            raise map_api_exception(error, what=f"discover {ref.api_group}") from None
        except TRANSPORT_ERRORS as error:
            raise ProviderUnavailable(f"discover {ref.api_group}: {error!r}") from None

    async def served(self, ref: TemplateRef) -> ServedResource:
        """Return the version and resource name serving ``ref``'s kind."""
        key = (ref.api_group, ref.kind)
        if key in self._served:
            return self._served[key]
        group = await self._discover(ref, f"/apis/{ref.api_group}", "V1APIGroup")
        version = str(group.preferred_version.version)
        listed = await self._discover(ref, f"/apis/{ref.api_group}/{version}", "V1APIResourceList")
        for resource in listed.resources or []:
            if resource.kind == ref.kind and "/" not in resource.name and resource.namespaced:
                self._served[key] = ServedResource(version=version, plural=str(resource.name))
                return self._served[key]
        raise InvalidRequest(
            f"{ref}: kind {ref.kind} is not served in {ref.api_group}/{version}",
            code="TemplateKindNotServed",
        )

    async def check(self, ref: TemplateRef, *, namespace: str) -> None:
        """Raise InvalidRequest(TemplateNotFound) unless ``ref`` exists in ``namespace``."""
        served = await self.served(ref)
        custom = client.CustomObjectsApi(await self._api())
        try:
            await custom.get_namespaced_custom_object(
                ref.api_group, served.version, namespace, served.plural, ref.name
            )
        except ApiException as error:
            if error.status == NOT_FOUND:
                raise InvalidRequest(
                    f"{ref} not found in namespace {namespace}: create it, or fix the "
                    "placement's reference",
                    code="TemplateNotFound",
                ) from None
            raise map_api_exception(error, what=f"get {ref}") from None
        except TRANSPORT_ERRORS as error:
            raise ProviderUnavailable(f"get {ref}: {error!r}") from None
