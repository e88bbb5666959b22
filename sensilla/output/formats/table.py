"""``-o table``: aligned columns (TIMESTAMP, SOURCE, DESTINATION, TYPE, VERDICT,
SUMMARY), printed when the stream ends (Go's tabwriter), so not for --follow."""

from __future__ import annotations

from sensilla.output import fields
from sensilla.output.base import Printer, PrinterOptions
from sensilla.output.formats.compact import lost_source, node_status_line, time_of
from sensilla.output.tabwriter import format_table
from sensilla.protos import observer_pb2


class TablePrinter(Printer):
    colored = False  # Hubble disables colours for the tabwriter

    def __init__(self, opts: PrinterOptions) -> None:
        super().__init__(opts)
        self.buffer: list[str] = []

    def _header(self) -> None:
        if self.line == 0:
            node = "NODE\t" if self.opts.node_name else ""
            self.buffer.append(f"TIMESTAMP\t{node}SOURCE\tDESTINATION\tTYPE\tVERDICT\tSUMMARY\n")

    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        f = resp.flow
        self._header()
        src, dst = fields.host_names(f, self.color, self.opts.ip_translation)
        node = f"{fields.escape(f.node_name)}\t" if self.opts.node_name else ""
        cells = [
            src,
            dst,
            fields.flow_type(f),
            fields.verdict(f, self.color),
            fields.summary(f, self.color),
        ]
        # a tab or newline inside a cell would break the columns
        cells = [c.replace("\t", " ").replace("\n", " ") for c in cells]
        self.buffer.append(f"{time_of(f, self.opts.time_format)}\t{node}" + "\t".join(cells) + "\n")
        self.line += 1

    def write_lost_event(self, resp: observer_pb2.GetFlowsResponse) -> None:
        lost = resp.lost_events
        self._header()
        node = "\t" if self.opts.node_name else ""
        self.buffer.append(
            f"\t{node}{lost_source(resp)}\t\tEVENTS LOST\t\t"
            f"CPU({lost.cpu.value}) - {lost.num_events_lost}\n"
        )
        self.line += 1

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.err.write(node_status_line(resp, self.opts.time_format) + "\n")

    def close(self) -> None:
        if self.buffer:
            self.opts.out.write(format_table("".join(self.buffer)))
            self.buffer.clear()
        super().close()


FORMATS = {"table": TablePrinter, "tab": TablePrinter}
