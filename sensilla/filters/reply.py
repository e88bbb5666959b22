"""reply: the flow is (not) a reply (Hubble's ReplyFilter, on Flow.is_reply).

A flow whose is_reply is unknown matches nothing, except a DROPPED flow, which
counts as not a reply (Hubble's compatibility rule for the deprecated ``reply``).
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params
from sensilla.protos import flow_pb2

FIELDS = ("reply",)

# is_reply column: 0 unknown, 1 false, 2 true
_SQL = {
    frozenset([True]): "is_reply = 2",
    frozenset([False]): f"(is_reply = 1 OR (is_reply = 0 AND verdict = {flow_pb2.DROPPED}))",
    frozenset([True, False]): f"(is_reply != 0 OR verdict = {flow_pb2.DROPPED})",
}


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.reply:
        return []
    wanted = frozenset(bool(v) for v in ff.reply)

    def match(flow: flow_pb2.Flow) -> bool:
        if not flow.HasField("is_reply"):
            if flow.verdict != flow_pb2.DROPPED:
                return False
            return False in wanted
        return flow.is_reply.value in wanted

    return [Clause("reply", match, _SQL[wanted])]
