"""source_port / destination_port: L4 ports of TCP, UDP and SCTP flows (Hubble's
PortFilter). Values are decimal 0-65535."""

from __future__ import annotations

import re

from sensilla.filters.base import Clause, ports
from sensilla.filters.errors import FilterError
from sensilla.filters.sql import Params, all_of, in_list
from sensilla.protos import flow_pb2

FIELDS = ("source_port", "destination_port")

_DIGITS = re.compile(r"[0-9]+")


def parse_port(value: str) -> int | None:
    """Go's strconv.ParseUint(value, 10, 16)."""
    if not _DIGITS.fullmatch(value):
        return None
    port = int(value)
    return port if port <= 0xFFFF else None


def _compile(values: list[str], field: str, path: str, side: str, params: Params) -> Clause:
    wanted: list[int] = []
    for i, value in enumerate(values):
        port = parse_port(value)
        if port is None:
            raise FilterError(f"{path}.{field}[{i}]", f"invalid port {value!r}")
        wanted.append(port)
    wanted_set = frozenset(wanted)
    index = 0 if side == "src" else 1

    def match(flow: flow_pb2.Flow) -> bool:
        p = ports(flow)
        return p is not None and p[index] in wanted_set

    sql = all_of(
        [
            "protocol IN ('tcp', 'udp', 'sctp')",
            in_list(f"{side}_port", "UInt16", wanted, params),
        ]
    )
    return Clause(field, match, sql)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_port:
        out.append(_compile(list(ff.source_port), "source_port", path, "src", params))
    if ff.destination_port:
        out.append(_compile(list(ff.destination_port), "destination_port", path, "dst", params))
    return out
