"""``-o dict``: one block of ``KEY: value`` lines per flow, separated by dashes."""

from __future__ import annotations

from sensilla.output import fields
from sensilla.output.base import Printer
from sensilla.output.formats.compact import lost_source, time_of
from sensilla.protos import observer_pb2, relay_pb2

SEPARATOR = "------------"


class DictPrinter(Printer):
    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        f = resp.flow
        c = self.color
        src, dst = fields.host_names(f, c, self.opts.ip_translation)
        out = []
        if self.line != 0:
            out.append(SEPARATOR + "\n")
        out.append(f"  TIMESTAMP: {time_of(f, self.opts.time_format)}\n")
        if self.opts.node_name:
            out.append(f"       NODE: {fields.escape(f.node_name)}\n")
        out.append(
            f"     SOURCE: {src}\n"
            f"DESTINATION: {dst}\n"
            f"       TYPE: {fields.flow_type(f)}\n"
            f"    VERDICT: {fields.verdict(f, c)}\n"
            f"    SUMMARY: {fields.summary(f, c)}\n"
        )
        self.opts.out.write("".join(out))
        self.line += 1

    def write_lost_event(self, resp: observer_pb2.GetFlowsResponse) -> None:
        lost = resp.lost_events
        out = []
        if self.line != 0:
            out.append(SEPARATOR + "\n")
        out.append("  TIMESTAMP: \n")
        if self.opts.node_name:
            out.append("       NODE: \n")
        out.append(
            f"     SOURCE: {lost_source(resp)}\n"
            "       TYPE: EVENTS LOST\n"
            "    VERDICT: \n"
            f"    SUMMARY: CPU({lost.cpu.value}) - {lost.num_events_lost}\n"
        )
        self.opts.out.write("".join(out))
        self.line += 1

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        s = resp.node_status
        if self.line != 0:
            self.opts.err.write(SEPARATOR + "\n")
        else:
            self.line += 1
        message = fields.go_quote(s.message) if s.message else "N/A"
        names = fields.join_with_cutoff(list(s.node_names), ", ", 50)
        state = fields.enum_name(relay_pb2.NodeState, s.state_change)
        self.opts.err.write(
            fields.escape(
                f"  TIMESTAMP: {time_of(resp, self.opts.time_format)}\n"
                f"      STATE: {state}\n"
                f"      NODES: {names}\n"
                f"    MESSAGE: {message}\n"
            )
        )


FORMATS = {"dict": DictPrinter}
