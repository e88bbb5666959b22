"""tcp_flags: TCP flows carrying all flags of any one value (Hubble's TCPFilter:
a flow with SYN and ACK matches a filter asking for SYN).

A TCP flow without a flags message counts as one with no flags set.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.columns import TCP_FLAG_BITS
from sensilla.filters.sql import Params, all_of, any_of
from sensilla.protos import flow_pb2

FIELDS = ("tcp_flags",)


def flags_mask(flags: flow_pb2.TCPFlags) -> int:
    mask = 0
    for bit, name in enumerate(TCP_FLAG_BITS):
        if getattr(flags, name):
            mask |= 1 << bit
    return mask


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.tcp_flags:
        return []
    masks = list(dict.fromkeys(flags_mask(f) for f in ff.tcp_flags))

    def match(flow: flow_pb2.Flow) -> bool:
        if not flow.HasField("l4") or flow.l4.WhichOneof("protocol") != "TCP":
            return False
        have = flags_mask(flow.l4.TCP.flags)
        return any(have & m == m for m in masks)

    alternatives = []
    for m in masks:
        holder = params.add("UInt16", m)
        alternatives.append(f"bitAnd(tcp_flags, {holder}) = {holder}")
    return [Clause("tcp_flags", match, all_of(["protocol = 'tcp'", any_of(alternatives)]))]
