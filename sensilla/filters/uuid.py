"""uuid: the flow's identifier is one of the values (Hubble's UUIDFilter)."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params, in_list
from sensilla.protos import flow_pb2

FIELDS = ("uuid",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.uuid:
        return []
    wanted = frozenset(ff.uuid)

    def match(flow: flow_pb2.Flow) -> bool:
        return flow.uuid in wanted

    return [Clause("uuid", match, in_list("uuid", "String", list(ff.uuid), params))]
