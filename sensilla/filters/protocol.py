"""protocol: L4 (tcp, udp, sctp, icmp = icmpv4 or icmpv6, icmpv4, icmpv6) or L7
(dns, http, kafka) protocol names, case-insensitive (Hubble's ProtocolFilter).

L7 records are not stored in columns (this wave produces none): in SQL, L7 protocol
values match nothing.
"""

from __future__ import annotations

from sensilla.filters.base import Clause, l4_protocol
from sensilla.filters.errors import FilterError
from sensilla.filters.sql import Params, any_of, in_list
from sensilla.protos import flow_pb2

FIELDS = ("protocol",)

_L4 = {
    "icmp": ("icmpv4", "icmpv6"),
    "icmpv4": ("icmpv4",),
    "icmpv6": ("icmpv6",),
    "tcp": ("tcp",),
    "udp": ("udp",),
    "sctp": ("sctp",),
}
_L7 = ("dns", "http", "kafka")


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    if not ff.protocol:
        return []
    l4: list[str] = []
    l7: list[str] = []
    for i, value in enumerate(ff.protocol):
        name = value.lower()
        if name in _L4:
            l4.extend(_L4[name])
        elif name in _L7:
            l7.append(name)
        else:
            raise FilterError(f"{path}.protocol[{i}]", f"unknown protocol: {value!r}")
    l4_set = frozenset(l4)
    l7_set = frozenset(l7)

    def match(flow: flow_pb2.Flow) -> bool:
        if l4_protocol(flow) in l4_set:
            return True
        if l7_set and flow.HasField("l7"):
            record = flow.l7.WhichOneof("record")
            return record in l7_set
        return False

    sql = any_of([in_list("protocol", "String", l4, params)] if l4 else [])
    return [Clause("protocol", match, sql)]
