"""verdict: the flow's verdict is one of the values (Hubble's VerdictFilter)."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.enums import check_enum
from sensilla.filters.sql import Params, in_list
from sensilla.protos import flow_pb2

FIELDS = ("verdict",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.verdict:
        return []
    values = check_enum(list(ff.verdict), flow_pb2.Verdict, "verdict", "verdict", path)
    wanted = frozenset(values)

    def match(flow: flow_pb2.Flow) -> bool:
        return flow.verdict in wanted

    return [Clause("verdict", match, in_list("verdict", "UInt8", values, params))]
