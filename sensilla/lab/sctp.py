"""Just enough SCTP (RFC 9260) for the lab's probes: INIT and INIT-ACK over raw sockets.

This kernel has no SCTP stack, so probes send an INIT from the source pod through a
raw socket and the destination pod's responder answers INIT-ACK; the probe counts
as connected when the INIT-ACK comes back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

INIT = 1
INIT_ACK = 2
_HEADER = struct.Struct("!HHII")  # src port, dst port, verification tag, checksum
_CHUNK = struct.Struct("!BBH")  # type, flags, length
_INIT_BODY = struct.Struct("!IIHHI")  # initiate tag, a_rwnd, out streams, in streams, TSN


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _finish(header_wo_sum: bytes, body: bytes) -> bytes:
    packet = header_wo_sum + body
    checksum = crc32c(packet)
    # SCTP puts the CRC32c in little-endian byte order into the checksum field.
    return packet[:8] + struct.pack("<I", checksum) + packet[12:]


def build_init(sport: int, dport: int, initiate_tag: int) -> bytes:
    chunk = _CHUNK.pack(INIT, 0, _CHUNK.size + _INIT_BODY.size) + _INIT_BODY.pack(
        initiate_tag, 65535, 1, 1, initiate_tag
    )
    return _finish(_HEADER.pack(sport, dport, 0, 0), chunk)


def build_init_ack(sport: int, dport: int, peer_tag: int, own_tag: int) -> bytes:
    cookie = struct.pack("!HH", 7, 8) + b"lab!"  # State Cookie parameter
    length = _CHUNK.size + _INIT_BODY.size + len(cookie)
    chunk = _CHUNK.pack(INIT_ACK, 0, length) + _INIT_BODY.pack(own_tag, 65535, 1, 1, own_tag)
    return _finish(_HEADER.pack(sport, dport, peer_tag, 0), chunk + cookie)


@dataclass(frozen=True)
class SctpPacket:
    sport: int
    dport: int
    vtag: int
    chunk_type: int
    initiate_tag: int
    checksum_ok: bool


def parse(data: bytes) -> SctpPacket | None:
    """Parse an SCTP packet (no IP header); None when too short to be one."""
    if len(data) < _HEADER.size + _CHUNK.size:
        return None
    sport, dport, vtag, _ = _HEADER.unpack_from(data)
    (stored,) = struct.unpack_from("<I", data, 8)
    ok = crc32c(data[:8] + b"\0\0\0\0" + data[12:]) == stored
    ctype, _, _ = _CHUNK.unpack_from(data, _HEADER.size)
    tag = 0
    if ctype in (INIT, INIT_ACK) and len(data) >= _HEADER.size + _CHUNK.size + 4:
        (tag,) = struct.unpack_from("!I", data, _HEADER.size + _CHUNK.size)
    return SctpPacket(sport, dport, vtag, ctype, tag, ok)


def strip_ipv4_header(data: bytes) -> bytes:
    """Raw IPv4 sockets deliver the IP header too; IPv6 raw sockets do not."""
    if not data:
        return data
    ihl = (data[0] & 0x0F) * 4
    return data[ihl:]
