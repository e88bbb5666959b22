"""event_type: Cilium monitor event types and sub-types (Hubble's EventTypeFilter).

An entry matches when its type is 0 or equals the flow's type, and, with
match_sub_type, the sub-type equals the flow's. A flow without event_type counts as
type 0, sub-type 0 (Hubble: no match) -- only catch-all entries see the difference.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params, all_of, any_of
from sensilla.protos import flow_pb2

FIELDS = ("event_type",)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.event_type:
        return []
    entries = list(dict.fromkeys((e.type, e.match_sub_type, e.sub_type) for e in ff.event_type))

    def match(flow: flow_pb2.Flow) -> bool:
        et = flow.event_type
        for t, match_sub, sub in entries:
            if t != 0 and et.type != t:
                continue
            if match_sub and et.sub_type != sub:
                continue
            return True
        return False

    alternatives = []
    for t, match_sub, sub in entries:
        cond = []
        if t != 0:
            cond.append(f"event_type = {params.add('Int32', t)}")
        if match_sub:
            cond.append(f"event_subtype = {params.add('Int32', sub)}")
        alternatives.append(all_of(cond))
    return [Clause("event_type", match, any_of(alternatives))]
