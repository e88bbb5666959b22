"""Decoding flow events (numpy arrays of layout.EVENT_DTYPE).

The reader hands out whole batches as structured arrays; column access
(`events["bytes"].sum()`, masks on `events["reason"]`) needs no per-event
Python. `to_records()` turns a batch into small Python objects for code that
wants them (tests, debugging, the collector's slow paths).
"""

from __future__ import annotations

import enum
import ipaddress
import time
from dataclasses import dataclass

import numpy as np

from datapath import layout as L
from datapath.types import Direction

EVENT_DTYPE = L.EVENT_DTYPE


class EventReason(enum.IntEnum):
    START = L.EV_START
    FLAGS = L.EV_FLAGS
    PERIODIC = L.EV_PERIODIC
    END = L.EV_END
    DROP = L.EV_DROP
    PACKET = L.EV_PACKET


class CtState(enum.IntEnum):
    NONE = L.CT_STATE_NONE
    NEW = L.CT_STATE_NEW
    ESTABLISHED = L.CT_STATE_ESTABLISHED
    REPLY = L.CT_STATE_REPLY
    RELATED = L.CT_STATE_RELATED


def monotonic_to_wall_offset_ns() -> int:
    """Add to an event's ts_ns (CLOCK_MONOTONIC) to get nanoseconds since the epoch."""
    a = time.time_ns()
    m = time.monotonic_ns()
    b = time.time_ns()
    return (a + b) // 2 - m


def wall_time_ns(events: np.ndarray, offset_ns: int | None = None) -> np.ndarray:
    off = monotonic_to_wall_offset_ns() if offset_ns is None else offset_ns
    return events["ts_ns"].astype(np.int64) + np.int64(off)


def decode(raw: bytes) -> np.ndarray:
    """Concatenated raw flow_event structs -> structured array (zero copy)."""
    if len(raw) % L.EVENT_SIZE:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {L.EVENT_SIZE}-byte events")
    return np.frombuffer(raw, dtype=EVENT_DTYPE)


def address(
    family: int, raw: np.ndarray | bytes
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    b = bytes(bytearray(raw))
    if family == 4:
        return ipaddress.IPv4Address(b[:4])
    if family == 6:
        return ipaddress.IPv6Address(b[:16])
    return None


@dataclass(frozen=True)
class FlowEventRecord:
    ts_ns: int
    ifindex: int
    endpoint_id: int
    direction: Direction
    family: int
    proto: int
    saddr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    daddr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    sport: int
    dport: int
    tcp_flags: int
    verdict: int
    drop_reason: int
    src_identity: int
    dst_identity: int
    attribution: int
    packets: int
    bytes: int
    reply_packets: int
    reply_bytes: int
    is_reply: bool
    ct_state: int
    suppressed: int
    reason: int
    icmp_type: int
    icmp_code: int
    pkt_len: int
    flags: int

    @property
    def reason_name(self) -> str:
        try:
            return EventReason(self.reason).name
        except ValueError:
            return str(self.reason)


def to_records(events: np.ndarray) -> list[FlowEventRecord]:
    out = []
    for e in events:
        fam = int(e["family"])
        out.append(
            FlowEventRecord(
                ts_ns=int(e["ts_ns"]),
                ifindex=int(e["ifindex"]),
                endpoint_id=int(e["endpoint_id"]),
                direction=Direction(int(e["direction"])),
                family=fam,
                proto=int(e["proto"]),
                saddr=address(fam, e["saddr"]),
                daddr=address(fam, e["daddr"]),
                sport=int(e["sport"]),
                dport=int(e["dport"]),
                tcp_flags=int(e["tcp_flags"]),
                verdict=int(e["verdict"]),
                drop_reason=int(e["drop_reason"]),
                src_identity=int(e["src_identity"]),
                dst_identity=int(e["dst_identity"]),
                attribution=int(e["attribution"]),
                packets=int(e["packets"]),
                bytes=int(e["bytes"]),
                reply_packets=int(e["reply_packets"]),
                reply_bytes=int(e["reply_bytes"]),
                is_reply=bool(e["is_reply"]),
                ct_state=int(e["ct_state"]),
                suppressed=int(e["suppressed"]),
                reason=int(e["reason"]),
                icmp_type=int(e["icmp_type"]),
                icmp_code=int(e["icmp_code"]),
                pkt_len=int(e["pkt_len"]),
                flags=int(e["flags"]),
            )
        )
    return out
