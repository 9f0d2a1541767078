"""Base model of the API: camelCase wire names, strict fields, CEL rules checked in Python too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

CEL_RULES_KEY = "x-kubernetes-validations"


@dataclass(frozen=True, slots=True)
class CelRule:
    """One ``x-kubernetes-validations`` rule and its Python twin.

    ``check`` receives the validated model and returns True when the object is valid; it
    is None only for transition rules (``oldSelf``), which need the stored object.
    ``field_path`` (relative, e.g. ``.placements``) makes the apiserver report the error at
    that field instead of at the object holding the rule.
    """

    rule: str
    message: str
    check: Callable[[Any], bool] | None
    field_path: str = ""
    # FieldValueDuplicate is not offered: the apiserver then drops the message.
    reason: str = ""

    @property
    def is_transition(self) -> bool:
        return self.check is None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


class RuleViolationError(ValueError):
    """Raised by a model when one of its CEL rules (checked in Python) does not hold."""

    def __init__(self, violations: list[CelRule]) -> None:
        self.violations = tuple(violations)
        super().__init__(
            "; ".join(
                f"{rule.field_path.lstrip('.')}: {rule.message}"
                if rule.field_path
                else rule.message
                for rule in violations
            )
        )


def _add_cel_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules: tuple[CelRule, ...] = getattr(model, "cel_rules", ())
    if rules:
        schema[CEL_RULES_KEY] = [rule.to_schema() for rule in rules]


class ApiModel(BaseModel):
    """Every API object: camelCase aliases; unknown fields rejected (fieldValidation=Strict)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
        json_schema_extra=_add_cel_rules,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        failed = [
            rule for rule in type(self).cel_rules if rule.check is not None and not rule.check(self)
        ]
        if failed:
            raise RuleViolationError(failed)
        return self

    def to_wire(self) -> dict[str, Any]:
        """Return the object as it is written to Kubernetes: camelCase, JSON types, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
