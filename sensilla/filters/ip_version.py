"""ip_version: IPv4 / IPv6 / IP_NOT_USED (Hubble's IPVersionFilter)."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.enums import check_enum
from sensilla.filters.sql import Params, in_list
from sensilla.protos import flow_pb2

FIELDS = ("ip_version",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.ip_version:
        return []
    values = check_enum(list(ff.ip_version), flow_pb2.IPVersion, "IP version", "ip_version", path)
    wanted = frozenset(values)

    def match(flow: flow_pb2.Flow) -> bool:
        return flow.IP.ipVersion in wanted

    return [Clause("ip_version", match, in_list("ip_version", "UInt8", values, params))]
