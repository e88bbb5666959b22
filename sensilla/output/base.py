"""The printer interface: one GetFlowsResponse at a time, in one output format."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

from sensilla.output.fields import Colorer
from sensilla.protos import observer_pb2, relay_pb2


@dataclass
class PrinterOptions:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    time_format: str = "StampMilli"  # one of timefmt.FORMAT_NAMES
    color: str = "auto"  # auto | always | never (compact and dict only)
    node_name: bool = False  # print the node name of each flow
    ip_translation: bool = True  # pod / service names instead of addresses
    debug: bool = False  # also print informational node status events


def _use_color(when: str, stream: TextIO) -> bool:
    when = when.lower()
    if when == "always":
        return True
    if when == "never":
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Printer:
    """Base class of the output formats. Subclasses implement write_flow,
    write_lost_event and write_node_status (and close, when they buffer)."""

    colored = True  # formats whose output may carry colours

    def __init__(self, opts: PrinterOptions) -> None:
        self.opts = opts
        self.color = Colorer(self.colored and _use_color(opts.color, opts.out))
        self.line = 0  # responses written so far (Hubble's p.line)

    def write(self, resp: observer_pb2.GetFlowsResponse) -> None:
        which = resp.WhichOneof("response_types")
        if which == "flow":
            self.write_flow(resp)
        elif which == "lost_events":
            self.write_lost_event(resp)
        elif which == "node_status":
            state = resp.node_status.state_change
            if self.opts.debug or state in (relay_pb2.NODE_ERROR, relay_pb2.NODE_UNAVAILABLE):
                self.write_node_status(resp)
        elif which is not None and self.opts.debug:
            self.opts.err.write(f"unknown response type: {which}\n")

    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        raise NotImplementedError

    def write_lost_event(self, resp: observer_pb2.GetFlowsResponse) -> None:
        raise NotImplementedError

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush anything buffered (the table format prints on close)."""
        self.opts.out.flush()
