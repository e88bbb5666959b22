"""``-o compact``: one line per flow, as

Nov 26 04:36:29.123: x/a:43210 (ID:1234) -> y/b:80 (ID:5678) to-endpoint FORWARDED (TCP Flags: SYN)
"""

from __future__ import annotations

from sensilla.output import fields
from sensilla.output.base import Printer
from sensilla.output.timefmt import format_timestamp
from sensilla.protos import flow_pb2, observer_pb2, relay_pb2


def time_of(msg: flow_pb2.Flow | observer_pb2.GetFlowsResponse, fmt: str) -> str:
    return format_timestamp(msg.time if msg.HasField("time") else None, fmt)


def node_status_line(resp: observer_pb2.GetFlowsResponse, fmt: str) -> str:
    """The one-line form of a node status event (compact and table, on stderr)."""
    s = resp.node_status
    names = list(s.node_names)
    joined = fields.join_with_cutoff(names, ", ", 50)
    prefix = f"{time_of(resp, fmt)} [{resp.node_name}]"
    state = s.state_change
    if state == relay_pb2.NODE_CONNECTED:
        msg = f"{prefix}: Receiving flows from {len(names)} nodes: {joined}"
    elif state == relay_pb2.NODE_UNAVAILABLE:
        msg = f"{prefix}: {len(names)} nodes are unavailable: {joined}"
    elif state == relay_pb2.NODE_GONE:
        msg = f"{prefix}: {len(names)} nodes removed from cluster: {joined}"
    elif state == relay_pb2.NODE_ERROR:
        msg = f"{prefix}: Error {fields.go_quote(s.message)} on {len(names)} nodes: {joined}"
    else:
        msg = f"{prefix}: unknown node status event: {s}".rstrip()
    return fields.escape(msg)


def lost_source(resp: observer_pb2.GetFlowsResponse) -> str:
    return fields.enum_name(flow_pb2.LostEventSource, resp.lost_events.source)


class CompactPrinter(Printer):
    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        f = resp.flow
        c = self.color
        src, dst = fields.host_names(f, c, self.opts.ip_translation)
        src_id = fields.identity(c, f.source.identity)
        dst_id = fields.identity(c, f.destination.identity)
        node = f" [{fields.escape(f.node_name)}]" if self.opts.node_name else ""
        arrow = "->"
        if not f.HasField("is_reply"):
            arrow = "<>"
        elif f.is_reply.value:
            src, dst = dst, src
            src_id, dst_id = dst_id, src_id
            arrow = "<-"
        self.opts.out.write(
            f"{time_of(f, self.opts.time_format)}{node}: {src} {src_id} {arrow} {dst} {dst_id} "
            f"{fields.flow_type(f)} {fields.verdict(f, c)} ({fields.summary(f, c)})\n"
        )
        self.line += 1

    def write_lost_event(self, resp: observer_pb2.GetFlowsResponse) -> None:
        lost = resp.lost_events
        self.opts.out.write(
            f"EVENTS LOST: {lost_source(resp)} CPU({lost.cpu.value}) {lost.num_events_lost}\n"
        )
        self.line += 1

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.err.write(node_status_line(resp, self.opts.time_format) + "\n")


FORMATS = {"compact": CompactPrinter}
