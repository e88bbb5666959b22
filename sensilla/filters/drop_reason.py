"""drop_reason_desc: dropped flows with one of the drop reasons (Hubble's
DropReasonDescFilter): the verdict must be DROPPED."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.enums import check_enum
from sensilla.filters.sql import Params, all_of, in_list
from sensilla.protos import flow_pb2

FIELDS = ("drop_reason_desc",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.drop_reason_desc:
        return []
    values = check_enum(
        list(ff.drop_reason_desc), flow_pb2.DropReason, "drop reason", "drop_reason_desc", path
    )
    wanted = frozenset(values)

    def match(flow: flow_pb2.Flow) -> bool:
        return flow.verdict == flow_pb2.DROPPED and flow.drop_reason_desc in wanted

    sql = all_of(
        [f"verdict = {flow_pb2.DROPPED}", in_list("drop_reason", "UInt16", values, params)]
    )
    return [Clause("drop_reason_desc", match, sql)]
