"""Send hand-made frames from a pod and capture what reaches a pod (AF_PACKET)."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetNS

from sensilla.lab import netns as N
from tests.datapath import packets as P

ETH_P_ALL = 0x0003


def mac_of(netns: str, ifname: str) -> bytes:
    with NetNS(netns, flags=0) as ipr:
        link = ipr.get_links(ifname=ifname)[0]
        return bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))


def send_frames(
    pod_netns: str, node_netns: str, host_if: str, payloads: list[tuple[int, bytes]]
) -> None:
    """Send (ethertype, L3 bytes) frames out of the pod's eth0 to its node."""
    src = mac_of(pod_netns, "eth0")
    dst = mac_of(node_netns, host_if)
    with N.entered(pod_netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.bind(("eth0", 0))
        for proto, l3 in payloads:
            s.send(P.eth(proto, l3, src=src, dst=dst))
    finally:
        s.close()


def send_ip(pod: Any, *packets: bytes) -> None:
    """IPv4/IPv6 packets from a lab pod (PodLayout) to its node's lxc device,
    byte for byte (no kernel fix-ups of lengths or checksums)."""
    frames = [(P.ETH_P_IP if (p[0] >> 4) == 4 else P.ETH_P_IPV6, p) for p in packets]
    send_frames(pod.netns, pod.node.netns, pod.host_if, frames)


@dataclass(frozen=True)
class Captured:
    src: str
    dst: str
    proto: int
    data: bytes


class RawCapture:
    """Every IPv4/IPv6 frame arriving on a pod's eth0 while open."""

    def __init__(self, netns: str) -> None:
        with N.entered(netns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("eth0", 0))
        self.sock.setblocking(False)

    def __enter__(self) -> RawCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def collect(self, duration: float, keep: Callable[[Captured], bool]) -> list[Captured]:
        out: list[Captured] = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            while True:
                try:
                    frame, addr = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                c = parse(frame)
                if c is not None and keep(c):
                    out.append(c)


def parse(frame: bytes) -> Captured | None:
    if len(frame) < 14:
        return None
    (proto,) = struct.unpack_from("!H", frame, 12)
    ip = frame[14:]
    if proto == P.ETH_P_IP and len(ip) >= 20:
        return Captured(
            str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20])), ip[9], ip
        )
    if proto == P.ETH_P_IPV6 and len(ip) >= 40:
        return Captured(
            str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40])), ip[6], ip
        )
    return None
