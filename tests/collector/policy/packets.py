"""Crafted first packets of a connection (Ethernet + IPv4/IPv6 + TCP SYN, UDP
datagram, SCTP INIT), for running the loaded programs with BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ipaddress
import struct

from sensilla.lab.sctp import build_init

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SRC_MAC = bytes.fromhex("0a0000000001")
DST_MAC = bytes.fromhex("0a0000000002")
PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _l4(protocol: str, src: IPAddress, dst: IPAddress, sport: int, dport: int) -> bytes:
    proto = PROTO[protocol]
    if protocol == "SCTP":
        return build_init(sport, dport, 0x5EED0000 | (sport & 0xFFFF))
    if protocol == "TCP":
        seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    else:
        payload = b"spo"
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(seg), proto)
    c = _csum(pseudo + seg) or 0xFFFF
    off = 16 if protocol == "TCP" else 6
    return seg[:off] + struct.pack("!H", c) + seg[off + 2 :]


def first_packet(protocol: str, src: IPAddress, dst: IPAddress, sport: int, dport: int) -> bytes:
    l4 = _l4(protocol, src, dst, sport, dport)
    proto = PROTO[protocol]
    if src.version == 4:
        hdr = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(l4),
            sport & 0xFFFF,
            0x4000,
            64,
            proto,
            0,
            src.packed,
            dst.packed,
        )
        hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
        return DST_MAC + SRC_MAC + b"\x08\x00" + hdr + l4
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src.packed, dst.packed)
    return DST_MAC + SRC_MAC + b"\x86\xdd" + hdr + l4
