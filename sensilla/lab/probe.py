"""Real connections between lab pods, all at once, with a bounded timeout.

TCP: a connection that completes and carries one request/response exchange.
UDP: a datagram answered by the destination (resent a few times within the timeout).
SCTP: an INIT answered by INIT-ACK (see sensilla.lab.sctp).
In every case the answer names the pod that sent it, so a probe that reaches the
wrong pod is reported as not connected, with the reason.
"""

from __future__ import annotations

import errno
import random
import selectors
import socket
import time
from dataclasses import dataclass, field

from sensilla.lab import netns as N
from sensilla.lab import sctp
from sensilla.lab.layout import LabLayout, PodLayout

IPPROTO_SCTP = 132
UDP_RESEND_S = 0.25
SCTP_PORTS = 60999 - 32768 + 1  # Linux's default ephemeral range


@dataclass
class ProbeResult:
    source: str
    destination: str
    connected: bool
    detail: str = ""
    # what a flow of this attempt carries, to find it among flows afterwards
    port: int = 0
    sport: int = 0
    started_ns: int = 0  # wall clock, like flow times
    ended_ns: int = 0

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "from": self.source,
            "to": self.destination,
            "connected": self.connected,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class _Attempt:
    src: PodLayout
    dst: PodLayout
    port: int
    started_ns: int = 0
    sock: socket.socket | None = None
    state: str = "connecting"
    result: ProbeResult | None = None
    last_send: float = 0.0
    tag: int = 0
    sport: int = 0
    buffer: bytes = b""
    attempts: int = field(default=0)


def _address(pod: PodLayout, family: int) -> str:
    return pod.ipv4 if family == 4 else pod.ipv6


def _finish(a: _Attempt, connected: bool, detail: str = "") -> None:
    if a.result is None:
        a.result = ProbeResult(
            a.src.key,
            a.dst.key,
            connected,
            detail,
            port=a.port,
            sport=a.sport,
            started_ns=a.started_ns,
            ended_ns=time.time_ns(),
        )


def probe(
    layout: LabLayout,
    pairs: list[tuple[PodLayout, PodLayout]],
    port: int,
    protocol: str,
    family: int = 4,
    timeout: float = 1.5,
) -> list[ProbeResult]:
    """One attempt per (source, destination) pair, all to `port`."""
    return probe_ports([(src, dst, port) for src, dst in pairs], protocol, family, timeout)


def probe_ports(
    targets: list[tuple[PodLayout, PodLayout, int]],
    protocol: str,
    family: int = 4,
    timeout: float = 1.5,
) -> list[ProbeResult]:
    """One attempt per (source, destination, port), all at once; results in order."""
    protocol = protocol.upper()
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise ValueError(f"protocol {protocol!r}: must be TCP, UDP or SCTP")
    if family not in (4, 6):
        raise ValueError(f"family {family}: must be 4 or 6")
    sel = selectors.DefaultSelector()
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    attempts = [_Attempt(src, dst, port) for src, dst, port in targets]
    raw_socks: dict[str, socket.socket] = {}
    by_tag: dict[int, _Attempt] = {}
    sctp_base = random.randrange(SCTP_PORTS)
    try:
        now = time.monotonic()
        for i, a in enumerate(attempts):
            dst_addr = _address(a.dst, family)
            a.started_ns = time.time_ns()
            if protocol == "SCTP":
                raw = raw_socks.get(a.src.netns)
                if raw is None:
                    with N.entered(a.src.netns):
                        raw = socket.socket(af, socket.SOCK_RAW, IPPROTO_SCTP)
                    raw.setblocking(False)
                    raw_socks[a.src.netns] = raw
                    sel.register(raw, selectors.EVENT_READ, ("sctp", a.src.netns))
                a.tag = random.getrandbits(32) or 1
                while a.tag in by_tag:
                    a.tag = random.getrandbits(32) or 1
                a.sport = _sctp_source_port(sctp_base, i)
                by_tag[a.tag] = a
                _send_init(raw, a, dst_addr, a.port)
                a.last_send = now
                continue
            kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
            with N.entered(a.src.netns):
                s = socket.socket(af, kind)
            s.setblocking(False)
            a.sock = s
            if protocol == "TCP":
                err = s.connect_ex((dst_addr, a.port))
                a.sport = s.getsockname()[1]
                if err not in (0, errno.EINPROGRESS):
                    _finish(a, False, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                sel.register(s, selectors.EVENT_WRITE, ("tcp", a))
            else:
                s.connect((dst_addr, a.port))
                a.sport = s.getsockname()[1]
                _send_udp(a)
                a.last_send = now
                sel.register(s, selectors.EVENT_READ, ("udp", a))
        deadline = now + timeout
        while any(a.result is None for a in attempts):
            now = time.monotonic()
            if now >= deadline:
                break
            wait = min(deadline - now, UDP_RESEND_S / 2)
            for key, events in sel.select(timeout=wait):
                kind, ctx = key.data
                if kind == "tcp":
                    _on_tcp(sel, ctx, events)
                elif kind == "udp":
                    _on_udp(sel, ctx)
                else:
                    _on_sctp(key.fileobj, by_tag, family)  # type: ignore[arg-type]
            now = time.monotonic()
            for a in attempts:
                if a.result is None and protocol != "TCP" and now - a.last_send >= UDP_RESEND_S:
                    if protocol == "UDP":
                        _send_udp(a)
                    else:
                        _send_init(raw_socks[a.src.netns], a, _address(a.dst, family), a.port)
                    a.last_send = now
        for a in attempts:
            _finish(a, False, "timeout")
    finally:
        for a in attempts:
            if a.sock is not None:
                a.sock.close()
        for raw in raw_socks.values():
            raw.close()
        sel.close()
    return [a.result for a in attempts if a.result is not None]


def _sctp_source_port(base: int, i: int) -> int:
    """Distinct source ports for the attempts of one round (raw SCTP has no socket
    to pick one)."""
    return 32768 + (base + i) % SCTP_PORTS


def _send_udp(a: _Attempt) -> None:
    assert a.sock is not None
    try:
        a.sock.send(b"probe")
    except OSError as exc:
        # ICMP errors of earlier datagrams surface here; keep trying until the timeout
        a.attempts += 1
        if a.attempts > 20:
            _finish(a, False, f"send: {exc}")


def _send_init(raw: socket.socket, a: _Attempt, dst: str, port: int) -> None:
    try:
        raw.sendto(sctp.build_init(a.sport, port, a.tag), (dst, 0))
    except OSError as exc:
        a.attempts += 1
        if a.attempts > 20:
            _finish(a, False, f"send: {exc}")


def _on_tcp(sel: selectors.BaseSelector, a: _Attempt, events: int) -> None:
    assert a.sock is not None
    s = a.sock
    if a.state == "connecting":
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sel.unregister(s)
            _finish(a, False, f"connect: {errno.errorcode.get(err, err)}")
            return
        try:
            s.send(b"probe\n")
        except OSError as exc:
            sel.unregister(s)
            _finish(a, False, f"send: {exc}")
            return
        a.state = "reading"
        sel.modify(s, selectors.EVENT_READ, ("tcp", a))
        return
    try:
        data = s.recv(4096)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        sel.unregister(s)
        _finish(a, False, f"recv: {exc}")
        return
    a.buffer += data
    if data and b"\n" not in a.buffer:
        return
    sel.unregister(s)
    _check_answer(a, a.buffer.decode(errors="replace").strip())


def _on_udp(sel: selectors.BaseSelector, a: _Attempt) -> None:
    assert a.sock is not None
    try:
        data = a.sock.recv(4096)
    except (BlockingIOError, InterruptedError):
        return
    except OSError:
        return  # e.g. ECONNREFUSED from an ICMP error: keep waiting for a real answer
    sel.unregister(a.sock)
    _check_answer(a, data.decode(errors="replace").strip())


def _on_sctp(raw: socket.socket, by_tag: dict[int, _Attempt], family: int) -> None:
    while True:
        try:
            data, addr = raw.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        payload = sctp.strip_ipv4_header(data) if family == 4 else data
        pkt = sctp.parse(payload)
        if pkt is None or pkt.chunk_type != sctp.INIT_ACK or not pkt.checksum_ok:
            continue
        a = by_tag.get(pkt.vtag)
        if a is None or a.result is not None:
            continue
        if addr[0] != _address(a.dst, family) or pkt.sport != _dst_port(a, pkt):
            continue
        _finish(a, True)


def _dst_port(a: _Attempt, pkt: sctp.SctpPacket) -> int:
    return pkt.sport if pkt.dport == a.sport else -1


def _check_answer(a: _Attempt, answer: str) -> None:
    if answer == a.dst.key:
        _finish(a, True)
    elif not answer:
        _finish(a, False, "closed without an answer")
    else:
        _finish(a, False, f"answered by {answer!r}")


def select_pairs(
    layout: LabLayout, sources: list[str] | None, destinations: list[str] | None
) -> list[tuple[PodLayout, PodLayout]]:
    def pick(keys: list[str] | None) -> list[PodLayout]:
        if not keys:
            return list(layout.pods)
        return [layout.pod(k) for k in keys]

    return [(s, d) for s in pick(sources) for d in pick(destinations) if s.key != d.key]
