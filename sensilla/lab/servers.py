"""The pods' servers: one process serving every pod of a lab.

For each pod and each port of its spec: a TCP listener and a UDP socket (dual-stack,
IPv4 and IPv6) that answer with the pod's "namespace/name", and raw SCTP responders
(IPv4 and IPv6) that answer INIT with INIT-ACK. Sockets are created inside each pod's
network namespace; one selectors loop serves them all.

Run as `python -m sensilla.lab.servers LAB_JSON`; prints "ready" on stdout when every
socket is open.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

from sensilla.lab import netns as N
from sensilla.lab import sctp

IPPROTO_SCTP = 132


@dataclass
class Handler:
    kind: str  # tcp-listen, tcp-conn, udp, sctp4, sctp6
    pod: str
    ports: frozenset[int]


class PodServers:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.running = True

    def add_pod(self, netns: str, key: str, ports: list[dict[str, Any]]) -> None:
        by_proto: dict[str, set[int]] = {"TCP": set(), "UDP": set(), "SCTP": set()}
        for p in ports:
            by_proto[p["protocol"]].add(int(p["port"]))
        with N.entered(netns):
            for port in sorted(by_proto["TCP"]):
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::", port))
                s.listen(256)
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, Handler("tcp-listen", key, frozenset()))
            for port in sorted(by_proto["UDP"]):
                s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                s.bind(("::", port))
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, Handler("udp", key, frozenset()))
            if by_proto["SCTP"]:
                served = frozenset(by_proto["SCTP"])
                for family, kind in ((socket.AF_INET, "sctp4"), (socket.AF_INET6, "sctp6")):
                    s = socket.socket(family, socket.SOCK_RAW, IPPROTO_SCTP)
                    s.setblocking(False)
                    self.sel.register(s, selectors.EVENT_READ, Handler(kind, key, served))

    def _on_event(self, sock: socket.socket, h: Handler) -> None:
        if h.kind == "tcp-listen":
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.sel.register(conn, selectors.EVENT_READ, Handler("tcp-conn", h.pod, frozenset()))
        elif h.kind == "tcp-conn":
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                try:
                    sock.send(f"{h.pod}\n".encode())
                except OSError:
                    pass
            self.sel.unregister(sock)
            sock.close()
        elif h.kind == "udp":
            try:
                data, addr = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            if data:
                try:
                    sock.sendto(h.pod.encode(), addr)
                except OSError:
                    pass
        else:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            payload = sctp.strip_ipv4_header(data) if h.kind == "sctp4" else data
            pkt = sctp.parse(payload)
            if pkt is None or pkt.chunk_type != sctp.INIT or not pkt.checksum_ok:
                return
            if pkt.dport not in h.ports:
                return
            reply = sctp.build_init_ack(
                pkt.dport, pkt.sport, pkt.initiate_tag, random.getrandbits(32) or 1
            )
            try:
                sock.sendto(reply, (addr[0], 0))
            except OSError:
                pass

    def serve(self) -> None:
        while self.running:
            for key, _ in self.sel.select(timeout=0.5):
                self._on_event(key.fileobj, key.data)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        lab = json.loads(f.read())
    servers = PodServers()
    for pod in lab["pods"]:
        servers.add_pod(pod["netns"], f"{pod['namespace']}/{pod['name']}", pod["ports"])

    def stop(*_: object) -> None:
        servers.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    os.close(1)  # the parent stops reading after "ready"
    servers.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
