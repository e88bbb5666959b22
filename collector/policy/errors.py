"""Validation errors in the API server's style: every error names its field path.

The text follows Kubernetes' `field.Error` rendering, e.g.

    spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: "10.0.0.0/8":
        must be a strict subset of `cidr`        (on one line)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_NO_VALUE = object()


def render_value(value: Any) -> str:
    """A value as the API server quotes it (JSON for strings, numbers, lists)."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


@dataclass(frozen=True)
class FieldError:
    """One problem at one field path.

    kind is one of "Invalid value", "Required value", "Unsupported value",
    "Forbidden", "Duplicate value", "Unknown field", "Wrong type".
    """

    path: str
    kind: str
    detail: str
    value: Any = _NO_VALUE

    def __str__(self) -> str:
        head = f"{self.path or '<document>'}: {self.kind}"
        if self.value is not _NO_VALUE:
            head += f": {render_value(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head


class ErrorList(list[FieldError]):
    """Collects errors while walking a document."""

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.append(FieldError(path, "Invalid value", detail, value))

    def required(self, path: str, detail: str = "") -> None:
        self.append(FieldError(path, "Required value", detail))

    def unsupported(self, path: str, value: Any, supported: Iterable[str]) -> None:
        allowed = ", ".join(render_value(s) for s in supported)
        self.append(FieldError(path, "Unsupported value", f"supported values: {allowed}", value))

    def forbidden(self, path: str, detail: str) -> None:
        self.append(FieldError(path, "Forbidden", detail))

    def unknown(self, path: str) -> None:
        self.append(FieldError(path, "Unknown field", "field not declared in schema"))

    def wrong_type(self, path: str, value: Any, expected: str) -> None:
        self.append(FieldError(path, "Invalid value", f"must be {expected}", value))


class PolicyValidationError(ValueError):
    """Documents the API server would reject; nothing was applied.

    `problems` pairs each field error with the document it belongs to (e.g.
    "policies.yaml document 2 (x/deny-all)"); `errors` lists the field errors alone.
    """

    def __init__(self, errors: Iterable[FieldError], source: str = "") -> None:
        self.problems: list[tuple[str, FieldError]] = [(source, e) for e in errors]
        super().__init__(self._message())

    @classmethod
    def merge(cls, parts: Iterable[PolicyValidationError]) -> PolicyValidationError:
        out = cls([])
        for part in parts:
            out.problems.extend(part.problems)
        out.args = (out._message(),)
        return out

    @property
    def errors(self) -> list[FieldError]:
        return [e for _, e in self.problems]

    def __str__(self) -> str:
        return self._message()

    def _message(self) -> str:
        lines = [f"{src}: {err}" if src else str(err) for src, err in self.problems]
        return "\n".join(lines) if lines else "invalid document"
