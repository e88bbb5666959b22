"""``-o ocsf``: one OCSF Network Activity event (class_uid 4001, OCSF 1.7.0) per flow,
one compact JSON object per line (sensilla.ocsf; docs/siem.md has the mapping).
OCSF has no event for Hubble's lost-event and node-status notices: they go to
stderr as Hubble JSON, so stdout holds OCSF events only."""

from __future__ import annotations

import json

from sensilla.ocsf import flow_to_ocsf
from sensilla.output.base import Printer
from sensilla.output.formats.jsonpb import to_json
from sensilla.protos import observer_pb2


def ocsf_line(resp: observer_pb2.GetFlowsResponse) -> str:
    observed = None
    if resp.HasField("time"):
        try:
            observed = resp.time.ToNanoseconds()
        except ValueError:  # not a valid Timestamp: the mapping uses the flow's, or now
            observed = None
    record = flow_to_ocsf(resp.flow, observed_ns=observed)
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class OcsfPrinter(Printer):
    colored = False

    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.out.write(ocsf_line(resp) + "\n")
        self.line += 1

    def write_lost_event(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.err.write(to_json(resp) + "\n")

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.err.write(to_json(resp) + "\n")


FORMATS = {"ocsf": OcsfPrinter}
