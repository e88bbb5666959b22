"""interface: the network interface the flow was observed at, by index and/or name
(Hubble's NetworkInterfaceFilter; index 0 or an empty name matches any). A flow
without interface counts as index 0 with no name."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params, all_of, any_of
from sensilla.protos import flow_pb2

FIELDS = ("interface",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.interface:
        return []
    wanted = list(dict.fromkeys((i.index, i.name) for i in ff.interface))

    def match(flow: flow_pb2.Flow) -> bool:
        iface = flow.interface
        return any(
            (idx == 0 or idx == iface.index) and (not name or name == iface.name)
            for idx, name in wanted
        )

    alternatives = []
    for idx, name in wanted:
        cond = []
        if idx:
            cond.append(f"interface_index = {params.add('UInt32', idx)}")
        if name:
            cond.append(f"interface_name = {params.add('String', name)}")
        alternatives.append(all_of(cond))
    return [Clause("interface", match, any_of(alternatives))]
