"""Typed query parameters: the only way values reach the store's SQL.

Queries are written with ClickHouse's own placeholder syntax, ``{name:Type}``. Each
value is checked strictly against its declared type in Python (an ``int`` for
``UInt16`` within 0..65535, a ``str``/``bytes`` for ``String``, a list of the element
type for ``Array(T)``, ...), then handed to the backend:

- chDB binds them server-side: the SQL text keeps the placeholders and the values
  travel separately, encoded here in ClickHouse's *escaped* text format (chDB passes a
  ``str`` value through unchanged, and does not escape on its own: raw backslashes or
  an out-of-range integer would otherwise be mangled, never executed).
- clickhouse-driver (servers as old as 18.16 have no server-side parameters) gets
  ``%(name)s`` placeholders and the driver's own escaping of the checked values;
  ``bytes`` become ``unhex('…')`` and arrays are wrapped in a ``CAST``.

``Set(T)`` is a pseudo-type for the right-hand side of ``IN``: a non-empty list,
bound as ``Array(T)`` on chDB and as a tuple literal on the driver (18.16 accepts no
array there).

Identifiers (database and table names, columns) never come from here: they come from
allowlists in the schema module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([A-Za-z0-9_(), ]+)\}")

INT_RANGES: dict[str, tuple[int, int]] = {
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
    "Int8": (-(2**7), 2**7 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    # DateTime: seconds since the epoch
    "DateTime": (0, 2**32 - 1),
}
SCALAR_TYPES = frozenset([*INT_RANGES, "String", "Float64"])


class ParamError(ValueError):
    """A parameter does not match its declared type (or is missing)."""


@dataclass(frozen=True)
class ParamType:
    kind: str  # "scalar", "array" or "set"
    element: str

    @property
    def clickhouse(self) -> str:
        if self.kind == "scalar":
            return self.element
        return f"Array({self.element})"


def parse_type(text: str) -> ParamType:
    text = text.replace(" ", "")
    for kind, prefix in (("array", "Array("), ("set", "Set(")):
        if text.startswith(prefix) and text.endswith(")"):
            inner = text[len(prefix) : -1]
            if inner not in SCALAR_TYPES:
                raise ParamError(f"unsupported element type {inner!r}")
            return ParamType(kind, inner)
    if text not in SCALAR_TYPES:
        raise ParamError(f"unsupported parameter type {text!r}")
    return ParamType("scalar", text)


def _check_scalar(name: str, element: str, value: Any) -> Any:
    if element in INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(
                f"parameter {name!r}: expected an integer for {element}, got {type(value).__name__}"
            )
        lo, hi = INT_RANGES[element]
        if not lo <= value <= hi:
            raise ParamError(f"parameter {name!r}: {value} is out of range for {element}")
        return int(value)
    if element == "Float64":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"parameter {name!r}: expected a number for Float64")
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(f"parameter {name!r}: Float64 must be finite")
        return float(value)
    if element == "String":
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ParamError(f"parameter {name!r}: not valid Unicode text") from exc
            return value
        raise ParamError(
            f"parameter {name!r}: expected str or bytes for String, got {type(value).__name__}"
        )
    raise ParamError(f"parameter {name!r}: unsupported type {element}")


def check_value(name: str, ptype: ParamType, value: Any) -> Any:
    """Return the value normalized for its type, or raise ParamError."""
    if ptype.kind == "scalar":
        return _check_scalar(name, ptype.element, value)
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise ParamError(f"parameter {name!r}: expected a list for {ptype.kind} of {ptype.element}")
    items = sorted(value) if isinstance(value, set | frozenset) else list(value)
    if ptype.kind == "set" and not items:
        raise ParamError(f"parameter {name!r}: an IN set must not be empty")
    return [_check_scalar(name, ptype.element, v) for v in items]


# --- chDB: ClickHouse's escaped text format for query parameter values -------------


def _escape_bytes(data: bytes, quote: bool) -> str:
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x27:
            out.append("\\'")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02X}")
    body = "".join(out)
    return f"'{body}'" if quote else body


def _escape_str(text: str, quote: bool) -> str:
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02X}")
        else:
            out.append(ch)  # printable ASCII and any non-ASCII character (sent as UTF-8)
    body = "".join(out)
    return f"'{body}'" if quote else body


def _chdb_scalar(element: str, value: Any, quote: bool) -> str:
    if element == "String":
        if isinstance(value, bytes):
            return _escape_bytes(value, quote)
        return _escape_str(value, quote)
    if element == "Float64":
        return repr(float(value))
    return str(int(value))


def encode_chdb(ptype: ParamType, value: Any) -> str:
    """Encode a checked value as ClickHouse parses query parameters (escaped format)."""
    if ptype.kind == "scalar":
        return _chdb_scalar(ptype.element, value, quote=False)
    return "[" + ",".join(_chdb_scalar(ptype.element, v, quote=True) for v in value) + "]"


def bind_chdb(sql: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, str]]:
    """Check every placeholder's value; return SQL (Set → Array) and encoded values."""
    params = dict(params or {})
    encoded: dict[str, str] = {}

    def repl(m: re.Match[str]) -> str:
        name, ptype = m.group(1), parse_type(m.group(2))
        if name not in params:
            raise ParamError(f"missing parameter {name!r}")
        value = check_value(name, ptype, params[name])
        enc = encode_chdb(ptype, value)
        if name in encoded and encoded[name] != enc:
            raise ParamError(f"parameter {name!r} used with two types")
        encoded[name] = enc
        if ptype.element == "DateTime":
            # DateTime text parsing depends on the server's time zone and rejects small
            # numbers: bind the epoch seconds as UInt32 and convert in SQL.
            if ptype.kind == "scalar":
                return f"toDateTime({{{name}:UInt32}})"
            if ptype.kind == "array":
                return f"arrayMap(x -> toDateTime(x), {{{name}:Array(UInt32)}})"
            return f"{{{name}:Array(UInt32)}}"
        return "{" + name + ":" + ptype.clickhouse + "}"

    out = PLACEHOLDER.sub(repl, sql)
    return out, encoded


# --- clickhouse-driver: client-side substitution with the driver's escaping ---------


def _driver_scalar(element: str, value: Any) -> Any:
    if element == "String" and isinstance(value, bytes):
        return _Raw(f"unhex('{value.hex()}')")
    if element == "DateTime":
        return _Raw(f"toDateTime({int(value)})")
    return value


class _Raw(str):
    """A literal built here from checked values (hex digits, integers)."""


def bind_driver(sql: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Check every placeholder's value; return pyformat SQL and driver parameters.

    Literal ``%`` in the SQL is doubled so the driver's substitution leaves it intact.
    Values the driver cannot escape (``bytes``) and DateTime are inlined here as
    ``unhex('<hex digits>')`` and ``toDateTime(<integer>)``: nothing else reaches the
    text. Always pass the returned dict to the driver, even when empty.
    """
    params = dict(params or {})
    out_params: dict[str, Any] = {}
    sql = sql.replace("%", "%%")

    def repl(m: re.Match[str]) -> str:
        name, ptype = m.group(1), parse_type(m.group(2))
        if name not in params:
            raise ParamError(f"missing parameter {name!r}")
        value = check_value(name, ptype, params[name])
        if ptype.kind == "scalar":
            conv = _driver_scalar(ptype.element, value)
            if isinstance(conv, _Raw):
                return conv.replace("%", "%%")
            out_params[name] = conv
            return f"%({name})s"
        if ptype.element == "String" and any(isinstance(v, bytes) for v in value):
            # binary items: every item as a hex literal (only hex digits reach the SQL)
            items = ", ".join(
                f"unhex('{(v if isinstance(v, bytes) else v.encode()).hex()}')" for v in value
            )
            if ptype.kind == "set":
                return f"({items})"
            return f"CAST([{items}] AS {ptype.clickhouse})"
        if ptype.kind == "set":
            out_params[name] = tuple(value)
            return f"%({name})s"
        out_params[name] = list(value)
        return f"CAST(%({name})s AS {ptype.clickhouse})"

    out = PLACEHOLDER.sub(repl, sql)
    return out, out_params
