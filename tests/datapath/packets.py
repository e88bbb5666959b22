"""Minimal packet builders for datapath tests (Ethernet, IPv4/IPv6 with options,
extension headers and fragments, TCP, UDP, SCTP, ICMP, ICMPv6)."""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s >> 16) + (s & 0xFFFF)
    return (~s) & 0xFFFF


def eth(proto: int, payload: bytes, src: bytes = SRC_MAC, dst: bytes = DST_MAC) -> bytes:
    return dst + src + struct.pack("!H", proto) + payload


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ident: int = 1,
    frag_offset: int = 0,
    more_fragments: bool = False,
    options: bytes = b"",
    ihl: int | None = None,
    total_length: int | None = None,
    ttl: int = 64,
) -> bytes:
    if len(options) % 4:
        raise ValueError("IPv4 options must be a multiple of 4 bytes")
    hl = ihl if ihl is not None else 5 + len(options) // 4
    tot = total_length if total_length is not None else 20 + len(options) + len(payload)
    fo = (frag_offset & 0x1FFF) | (0x2000 if more_fragments else 0)
    h = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | (hl & 0xF),
        0,
        tot,
        ident,
        fo,
        ttl,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    h += options
    h = h[:10] + struct.pack("!H", checksum(h)) + h[12:]
    return h + payload


def ipv6(
    src: str,
    dst: str,
    nexthdr: int,
    payload: bytes,
    *,
    payload_length: int | None = None,
    hlim: int = 64,
) -> bytes:
    plen = payload_length if payload_length is not None else len(payload)
    return (
        struct.pack("!IHBB", 6 << 28, plen, nexthdr, hlim)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def ext_header(nexthdr: int, length_units: int = 0) -> bytes:
    """A hop-by-hop / destination-options / routing header of (n+1)*8 bytes."""
    body = bytes(6 + 8 * length_units)
    return struct.pack("!BB", nexthdr, length_units) + body


def frag_header(nexthdr: int, offset_units: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, (offset_units << 3) | (1 if more else 0), ident)


def tcp(sport: int, dport: int, flags: int = TCP_SYN, payload: bytes = b"", doff: int = 5) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp_init(sport: int, dport: int) -> bytes:
    return struct.pack("!HHII", sport, dport, 0, 0) + struct.pack("!BBH", 1, 0, 20) + bytes(16)


def icmp(type_: int, code: int = 0, ident: int = 0, seq: int = 0, payload: bytes = b"") -> bytes:
    h = struct.pack("!BBHHH", type_, code, 0, ident, seq) + payload
    return h[:2] + struct.pack("!H", checksum(h)) + h[4:]


def icmp6(type_: int, code: int = 0, ident: int = 0, seq: int = 0, payload: bytes = b"") -> bytes:
    # checksum left 0: the program does not verify checksums
    return struct.pack("!BBHHH", type_, code, 0, ident, seq) + payload


def arp() -> bytes:
    return eth(ETH_P_ARP, bytes(28))


def v4(src: str, dst: str, proto: int, l4: bytes, **kw: object) -> bytes:
    return eth(ETH_P_IP, ipv4(src, dst, proto, l4, **kw))  # type: ignore[arg-type]


def v6(src: str, dst: str, nexthdr: int, payload: bytes, **kw: object) -> bytes:
    return eth(ETH_P_IPV6, ipv6(src, dst, nexthdr, payload, **kw))  # type: ignore[arg-type]
