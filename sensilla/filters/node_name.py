"""node_name: node name patterns (Hubble's NodeNameFilter).

A pattern is ``[cluster/]node`` where each part is an FQDN-like pattern: lower-case
letters, digits, "-", "_", "." and "*" (any run of ``[-.0-9a-z]``); an empty part
matches any name, a pattern without "/" matches any cluster. Flow node names
without a cluster are read as ``default/<name>``. Patterns are lower-cased; node
names are matched as they are.
"""

from __future__ import annotations

import re

from sensilla.filters.base import Clause
from sensilla.filters.errors import FilterError
from sensilla.filters.selector import GO_SPACE
from sensilla.filters.sql import Params
from sensilla.protos import flow_pb2

FIELDS = ("node_name",)

DEFAULT_CLUSTER = "default"
_FQDN_ANY = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)"


def _fqdn_pattern_regex(pattern: str) -> str:
    pattern = pattern.strip("".join(GO_SPACE)).lower()
    if pattern.endswith("."):
        pattern = pattern[:-1]
    if not pattern:
        raise ValueError("empty pattern")
    if pattern.endswith("."):
        raise ValueError("multiple trailing dots in pattern")
    out = []
    for ch in pattern:
        if ch == ".":
            out.append(r"\.")
        elif ch == "*":
            out.append(r"[-.0-9a-z]*")
        elif ch == "-" or ch == "_" or "0" <= ch <= "9" or "a" <= ch <= "z":
            out.append(ch)
        else:
            raise ValueError(f"{ch!r}: invalid rune in pattern")
    return "".join(out)


def node_pattern_regex(pattern: str) -> str:
    """The regular expression (RE2 and Python syntax alike, unanchored) for one pattern."""
    if not pattern:
        raise ValueError("empty pattern")
    parts = pattern.split("/")
    if len(parts) == 1:
        cluster, node = "", parts[0]
    elif len(parts) == 2:
        cluster, node = parts
    else:
        raise ValueError("too many slashes in pattern")
    c = _FQDN_ANY if cluster == "" else _fqdn_pattern_regex(cluster)
    n = _FQDN_ANY if node == "" else _fqdn_pattern_regex(node)
    return f"{c}/{n}"


def qualified_node_name(name: str) -> str:
    return name if "/" in name else f"{DEFAULT_CLUSTER}/{name}"


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.node_name:
        return []
    bodies = []
    for i, pattern in enumerate(ff.node_name):
        try:
            bodies.append(node_pattern_regex(pattern))
        except ValueError as exc:
            raise FilterError(
                f"{path}.node_name[{i}]", f"invalid node name pattern {pattern!r}: {exc}"
            ) from None
    body = "|".join(dict.fromkeys(bodies))
    py_re = re.compile(f"(?:{body})")

    def match(flow: flow_pb2.Flow) -> bool:
        name = flow.node_name
        if not name:
            return False
        return py_re.fullmatch(qualified_node_name(name)) is not None

    holder = params.add("String", f"\\A(?:{body})\\z")
    qualified = (
        f"if(position(node_name, '/') > 0, node_name, concat('{DEFAULT_CLUSTER}/', node_name))"
    )
    return [Clause("node_name", match, f"(node_name != '' AND match({qualified}, {holder}))")]
