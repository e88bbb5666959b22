"""SQL fragments with typed parameters over the flow columns.

Values never enter SQL text. A compiled fragment holds text with ClickHouse's typed
query-parameter placeholders (``{flt_0:String}``) and a table of the parameters'
ClickHouse types and Python values. :func:`render` turns a fragment into the form a
driver wants:

- ``"native"``: ``{name:Type}`` placeholders and Python values (server-side typed
  parameters: ClickHouse >= 19.x over HTTP, clickhouse-connect, ...);
- ``"chdb"``: the same text, values rendered as the strings chDB's ``params=``
  expects (ClickHouse's escaped text format, so any byte survives);
- ``"pyformat"``: ``%(name)s`` placeholders and Python values for clickhouse-driver,
  whose client-side substitution escapes and types each value (works on every
  ClickHouse version, 18.16 included).

Identifiers come only from :data:`sensilla.filters.columns.FLOW_COLUMNS`
(:func:`col` checks each use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sensilla.filters.columns import FLOW_COLUMNS

# ClickHouse types a parameter may have (the value is checked against the type).
_INT_RANGES: dict[str, tuple[int, int]] = {
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
}
PARAM_TYPES = frozenset([*_INT_RANGES, "String"])

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([A-Za-z0-9]+)\}")
STYLES = ("native", "chdb", "pyformat")


def col(name: str) -> str:
    """A column identifier, from the allowlist only."""
    if name not in FLOW_COLUMNS:
        raise KeyError(f"not a flow column: {name!r}")
    return name


@dataclass
class Params:
    """Allocates uniquely named, typed parameters for one compilation."""

    prefix: str = "flt_"
    values: dict[str, tuple[str, Any]] = field(default_factory=dict)
    _next: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.prefix):
            raise ValueError(f"bad parameter prefix {self.prefix!r}")

    def add(self, ch_type: str, value: Any) -> str:
        """Register a value; return its placeholder for the SQL text."""
        if ch_type == "String":
            if not isinstance(value, str):
                raise TypeError(f"String parameter needs str, got {type(value).__name__}")
        elif ch_type in _INT_RANGES:
            lo, hi = _INT_RANGES[ch_type]
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise TypeError(f"{ch_type} parameter out of range: {value!r}")
        else:
            raise TypeError(f"unsupported parameter type {ch_type!r}")
        name = f"{self.prefix}{self._next}"
        self._next += 1
        self.values[name] = (ch_type, value)
        return "{" + name + ":" + ch_type + "}"


def escape_chdb(value: Any) -> str:
    """A parameter value in ClickHouse's escaped text format (what chDB parses)."""
    if not isinstance(value, str):
        return str(int(value))
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\0":
            out.append("\\0")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        else:
            out.append(ch)
    return "".join(out)


def render(text: str, params: dict[str, tuple[str, Any]], style: str) -> tuple[str, dict[str, Any]]:
    """Render fragment text and its typed parameters for one driver style."""
    if style == "native":
        return text, {name: value for name, (_t, value) in params.items()}
    if style == "chdb":
        return text, {name: escape_chdb(value) for name, (_t, value) in params.items()}
    if style == "pyformat":
        # The text holds no literal values, so the only '%' would be ours; escape anyway.
        out = _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", text.replace("%", "%%"))
        return out, {name: value for name, (_t, value) in params.items()}
    raise ValueError(f"unknown SQL style {style!r} (one of {', '.join(STYLES)})")


def any_of(parts: list[str]) -> str:
    if not parts:
        return "0"
    if len(parts) == 1:
        return parts[0]
    return "(" + " OR ".join(parts) + ")"


def all_of(parts: list[str]) -> str:
    if not parts:
        return "1"
    if len(parts) == 1:
        return parts[0]
    return "(" + " AND ".join(parts) + ")"


def in_list(column: str, ch_type: str, values: list[Any], params: Params) -> str:
    """``column IN (p0, p1, ...)`` over distinct values (``=`` for one value)."""
    distinct = list(dict.fromkeys(values))
    holders = [params.add(ch_type, v) for v in distinct]
    if len(holders) == 1:
        return f"{col(column)} = {holders[0]}"
    return f"{col(column)} IN ({', '.join(holders)})"


def starts_with(expr: str, placeholder: str) -> str:
    """Prefix test that runs on ClickHouse 18.16 and current versions alike."""
    return f"startsWith({expr}, {placeholder})"
