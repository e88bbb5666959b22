"""Label selectors (`metav1.LabelSelector`): parsing, validation and matching.

A selector is the AND of its matchLabels and matchExpressions. The empty selector
({}) matches everything; in a NetworkPolicy peer an *absent* selector is different
from an empty one, which is why peers keep `None` for "not given".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.policy import names
from collector.policy.errors import ErrorList

IN = "In"
NOT_IN = "NotIn"
EXISTS = "Exists"
DOES_NOT_EXIST = "DoesNotExist"
OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == IN:
            return self.key in labels and labels[self.key] in self.values
        if self.operator == NOT_IN:
            # As in apimachinery: a missing key satisfies NotIn.
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return self.key in labels
        if self.operator == DOES_NOT_EXIST:
            return self.key not in labels
        raise ValueError(f"unknown operator {self.operator!r}")

    def describe(self) -> str:
        if self.operator == IN:
            if len(self.values) == 1:
                return f"{self.key}={self.values[0]}"
            return f"{self.key} in ({', '.join(self.values)})"
        if self.operator == NOT_IN:
            if len(self.values) == 1:
                return f"{self.key}!={self.values[0]}"
            return f"{self.key} notin ({', '.join(self.values)})"
        if self.operator == EXISTS:
            return f"{self.key} exists"
        return f"!{self.key}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = field(default_factory=tuple)

    @staticmethod
    def of(labels: Mapping[str, str] | None = None, *exprs: Requirement) -> LabelSelector:
        return LabelSelector(tuple(sorted((labels or {}).items())), tuple(exprs))

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        return all(r.matches(labels) for r in self.match_expressions)

    def describe(self) -> str:
        if self.empty:
            return "(everything)"
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts += [r.describe() for r in self.match_expressions]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [r.to_dict() for r in self.match_expressions]
        return out


def check_fields(
    obj: Mapping[str, Any], allowed: tuple[str, ...], path: str, errs: ErrorList
) -> None:
    for key in obj:
        if key not in allowed:
            errs.unknown(join(path, str(key)))


def join(path: str, child: str) -> str:
    return f"{path}.{child}" if path else child


def validate_labels(labels: Any, path: str, errs: ErrorList) -> dict[str, str]:
    """A label map (`metadata.labels`, `matchLabels`): keys qualified names, values
    label values. Errors are reported at `path`, as the API server does."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        errs.wrong_type(path, labels, "an object of label keys to values")
        return {}
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str):
            errs.wrong_type(path, key, "a string label key")
            continue
        if not isinstance(value, str):
            errs.wrong_type(f"{path}.{key}", value, "a string")
            continue
        for msg in names.qualified_name(key):
            errs.invalid(path, key, msg)
        for msg in names.label_value(value):
            errs.invalid(path, value, msg)
        out[key] = value
    return out


def parse_selector(obj: Any, path: str, errs: ErrorList) -> LabelSelector:
    """Parse and validate a LabelSelector as `ValidateLabelSelector` does."""
    if obj is None:
        return LabelSelector()
    if not isinstance(obj, Mapping):
        errs.wrong_type(path, obj, "an object (a label selector)")
        return LabelSelector()
    check_fields(obj, ("matchLabels", "matchExpressions"), path, errs)
    match_labels = validate_labels(obj.get("matchLabels"), join(path, "matchLabels"), errs)
    reqs: list[Requirement] = []
    exprs = obj.get("matchExpressions")
    if exprs is not None and not isinstance(exprs, list):
        errs.wrong_type(join(path, "matchExpressions"), exprs, "a list")
        exprs = None
    for i, expr in enumerate(exprs or []):
        epath = f"{join(path, 'matchExpressions')}[{i}]"
        req = _parse_requirement(expr, epath, errs)
        if req is not None:
            reqs.append(req)
    return LabelSelector(tuple(sorted(match_labels.items())), tuple(reqs))


def _parse_requirement(expr: Any, path: str, errs: ErrorList) -> Requirement | None:
    if not isinstance(expr, Mapping):
        errs.wrong_type(path, expr, "an object (a selector requirement)")
        return None
    check_fields(expr, ("key", "operator", "values"), path, errs)
    key = expr.get("key")
    operator = expr.get("operator")
    values = expr.get("values")
    ok = True
    if values is not None and not isinstance(values, list):
        errs.wrong_type(f"{path}.values", values, "a list of strings")
        values, ok = None, False
    vals: list[str] = []
    for j, v in enumerate(values or []):
        if not isinstance(v, str):
            errs.wrong_type(f"{path}.values[{j}]", v, "a string")
            ok = False
            continue
        vals.append(v)
    if operator in (IN, NOT_IN):
        if not values:
            errs.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            ok = False
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            errs.forbidden(
                f"{path}.values",
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
            ok = False
    elif operator is None:
        errs.required(f"{path}.operator")
        ok = False
    else:
        errs.invalid(f"{path}.operator", operator, "not a valid selector operator")
        ok = False
    if key is None or key == "":
        errs.required(f"{path}.key")
        ok = False
    elif not isinstance(key, str):
        errs.wrong_type(f"{path}.key", key, "a string")
        ok = False
    else:
        for msg in names.qualified_name(key):
            errs.invalid(f"{path}.key", key, msg)
            ok = False
    for j, v in enumerate(vals):
        for msg in names.label_value(v):
            errs.invalid(f"{path}.values[{j}]", v, msg)
            ok = False
    if not ok:
        return None
    assert isinstance(key, str) and isinstance(operator, str)
    return Requirement(key, operator, tuple(vals))
