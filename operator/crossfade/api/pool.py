"""The InferencePool object and parse_pool, which turns a stored body into validated models."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError

from crossfade.api.base import ApiModel, RuleViolationError
from crossfade.api.spec import InferencePoolSpec
from crossfade.api.status import InferencePoolStatus


class InferencePool(ApiModel):
    """An InferencePool (crossfade.dev/v1alpha1): spec written by users, status by crossfade."""

    api_version: Literal["crossfade.dev/v1alpha1"] = Field(
        default="crossfade.dev/v1alpha1", description="crossfade.dev/v1alpha1"
    )
    kind: Literal["InferencePool"] = Field(default="InferencePool", description="InferencePool")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Standard object metadata (name, namespace, ...)."
    )
    spec: InferencePoolSpec = Field(description="Desired state.")
    status: InferencePoolStatus | None = Field(default=None, description="Observed state.")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: its path in the object (``spec.placements[0].nodes``) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidPoolError(ValueError):
    """The body is not a valid InferencePool; ``errors`` lists every invalid field."""

    def __init__(self, *, identity: str, errors: Sequence[FieldError]) -> None:
        self.identity = identity
        self.errors = tuple(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"InferencePool {identity} is invalid:\n{lines}")


def _plain(value: Any) -> Any:
    """Copy mappings and sequences (e.g. kopf's Body views) into JSON-serialisable builtins.

    Null fields are dropped, as the apiserver prunes them before defaulting and validation.
    """
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def format_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic location as a Kubernetes-style field path."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(base: str, relative: str) -> str:
    if not relative:
        return base
    return f"{base}{relative}" if base else relative.lstrip(".")


def field_errors(error: ValidationError) -> list[FieldError]:
    """Flatten a pydantic ValidationError into field errors, one per violated rule."""
    out: list[FieldError] = []
    for item in error.errors(include_url=False):
        path = format_path(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolationError):
            out.extend(
                FieldError(path=_join(path, rule.field_path), message=rule.message)
                for rule in cause.violations
            )
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            out.append(FieldError(path=path, message=message))
    return out


def parse_pool(body: Mapping[str, Any]) -> InferencePool:
    """Validate a pool body in its wire form (camelCase, JSON types) like the apiserver does.

    Validation is strict (no string-to-int coercion), so what passes here passes the CRD
    schema. Raises InvalidPoolError naming every invalid field path.
    """
    plain = _plain(body)
    metadata = plain.get("metadata") or {}
    identity = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}".strip("/") or "?"
    try:
        return InferencePool.model_validate_json(json.dumps(plain), strict=True)
    except ValidationError as error:
        raise InvalidPoolError(identity=identity, errors=field_errors(error)) from None


def parse_spec(spec: Mapping[str, Any]) -> InferencePoolSpec:
    """Validate only a spec mapping (camelCase); raises InvalidPoolError with paths under spec."""
    try:
        return InferencePoolSpec.model_validate_json(json.dumps(_plain(spec)), strict=True)
    except ValidationError as error:
        errors = [
            FieldError(path=_join("spec", "." + e.path) if e.path else "spec", message=e.message)
            for e in field_errors(error)
        ]
        raise InvalidPoolError(identity="spec", errors=errors) from None
