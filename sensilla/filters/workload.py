"""source_workload / destination_workload: the endpoint's workload by name and/or kind
(Hubble's WorkloadFilter; an empty name or kind matches any).

The store keeps one workload per endpoint (the first, which is the only one Cilium
and Sensilla set), so both forms look at the first workload; a workload with neither
name nor kind counts as none.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params, all_of, any_of, col
from sensilla.protos import flow_pb2

FIELDS = ("source_workload", "destination_workload")


def first_workload(ep: flow_pb2.Endpoint) -> tuple[str, str]:
    """(name, kind) of the endpoint's first workload, ("", "") without one."""
    if not ep.workloads:
        return "", ""
    w = ep.workloads[0]
    return w.name, w.kind


def _compile(values: list[flow_pb2.Workload], field: str, side: str, params: Params) -> Clause:
    wanted = list(dict.fromkeys((w.name, w.kind) for w in values))
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        name, kind = first_workload(flow.source if source else flow.destination)
        if not name and not kind:
            return False
        return any((not n or n == name) and (not k or k == kind) for n, k in wanted)

    name_col, kind_col = col(f"{side}_workload"), col(f"{side}_workload_kind")
    alternatives = []
    for n, k in wanted:
        cond = []
        if n:
            cond.append(f"{name_col} = {params.add('String', n)}")
        if k:
            cond.append(f"{kind_col} = {params.add('String', k)}")
        alternatives.append(all_of(cond))
    sql = all_of([f"({name_col} != '' OR {kind_col} != '')", any_of(alternatives)])
    return Clause(field, match, sql)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_workload:
        out.append(_compile(list(ff.source_workload), "source_workload", "src", params))
    if ff.destination_workload:
        out.append(_compile(list(ff.destination_workload), "destination_workload", "dst", params))
    return out
