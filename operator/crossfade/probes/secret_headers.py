"""Request headers read from a Kubernetes Secret, held so their values never reach logs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

REDACTED = "<redacted>"


class SecretHeadersError(Exception):
    """The Secret holding probe headers could not be read or is malformed (no values inside)."""


class SecretHeaders(Mapping[str, str]):
    """Header name -> value; ``repr``/``str`` show names only, so logging it leaks nothing."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name!r}: {REDACTED!r}" for name in sorted(self._values))
        return f"SecretHeaders({{{shown}}})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretHeaders) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._values.items())))

    def values_for_redaction(self) -> tuple[str, ...]:
        """The secret values, for scrubbing them out of error text."""
        return tuple(v for v in self._values.values() if v)

    def scrub(self, text: str) -> str:
        """Replace every secret value occurring in ``text`` with a marker."""
        for value in self.values_for_redaction():
            text = text.replace(value, REDACTED)
        return text


async def load_secret_headers(api: client.ApiClient, *, namespace: str, name: str) -> SecretHeaders:
    """Read a Secret whose keys are header names and whose values are header values."""
    try:
        secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        raise SecretHeadersError(
            f"cannot read Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
        ) from None
    values: dict[str, str] = {}
    for key, encoded in (secret.data or {}).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretHeadersError(
                f"Secret {namespace}/{name} key {key!r} is not base64 UTF-8"
            ) from None
        if "\n" in values[key] or "\r" in values[key]:
            raise SecretHeadersError(f"Secret {namespace}/{name} key {key!r} spans lines")
    return SecretHeaders(values)
