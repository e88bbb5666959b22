"""traffic_direction: INGRESS / EGRESS (Hubble's TrafficDirectionFilter)."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.enums import check_enum
from sensilla.filters.sql import Params, in_list
from sensilla.protos import flow_pb2

FIELDS = ("traffic_direction",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.traffic_direction:
        return []
    values = check_enum(
        list(ff.traffic_direction),
        flow_pb2.TrafficDirection,
        "traffic direction",
        "traffic_direction",
        path,
    )
    wanted = frozenset(values)

    def match(flow: flow_pb2.Flow) -> bool:
        return flow.traffic_direction in wanted

    return [
        Clause("traffic_direction", match, in_list("traffic_direction", "UInt8", values, params))
    ]
