"""Steady, accountable traffic on a lab: rounds of real TCP connections between pods,
each one recorded with its 5-tuple, so that afterwards every connection can be looked
up among the flows the relay stored.

Allowed pairs must connect, whatever fault is going on (the datapath enforces without
its agent); denied pairs must never connect (enforcement never fails open).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sensilla.lab.layout import LabLayout, PodLayout
from sensilla.lab.probe import probe_ports

# NetworkPolicies that make the pairs below allowed or denied (default lab spec:
# namespaces x, y, z with pods a, b, c).
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: srl-isolate-y, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: srl-allow-x-to-yb, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: srl-no-egress-zc, namespace: z}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
"""
POLICY_NAMES = ("y/srl-isolate-y", "y/srl-allow-x-to-yb", "z/srl-no-egress-zc")

# (source, destination, port): allowed by POLICY (or by no policy at all)
ALLOWED = (("x/a", "y/b", 80), ("x/b", "y/b", 80), ("z/b", "z/a", 80), ("z/a", "z/c", 81))
# denied at the destination's ingress (y isolated) or at the source's egress (z/c)
DENIED = (("x/a", "y/c", 80), ("z/a", "y/b", 80), ("x/c", "y/a", 81), ("z/c", "x/a", 80))
DENIED_AT_EGRESS = {"z/c"}


@dataclass
class Conn:
    """One TCP connection attempt."""

    src: str
    dst: str
    src_ip: str
    dst_ip: str
    sport: int
    dport: int
    allowed: bool  # what the policy says
    started_ns: int
    ended_ns: int = 0
    connected: bool = False
    detail: str = ""
    src_node: str = ""
    dst_node: str = ""

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.src_ip, self.sport, self.dst_ip, self.dport)

    def expected_nodes(self) -> set[str]:
        """Nodes whose collector must see this connection (as a flow of its own)."""
        if not self.allowed and self.src in DENIED_AT_EGRESS:
            return {self.src_node}  # dropped as it leaves the source pod
        return {self.src_node, self.dst_node}


def connect_round(
    pairs: list[tuple[PodLayout, PodLayout, int, bool]], timeout: float
) -> list[Conn]:
    """Open one TCP connection per pair at once (the lab probe); allowed ones
    exchange a line with the destination's server (which answers with its pod's
    name)."""
    results = probe_ports([(src, dst, port) for src, dst, port, _ in pairs], "TCP", 4, timeout)
    return [
        Conn(
            src.key,
            dst.key,
            src.ipv4,
            dst.ipv4,
            r.sport,
            port,
            allowed,
            r.started_ns,
            ended_ns=r.ended_ns,
            connected=r.connected,
            detail=r.detail,
            src_node=src.node.name,
            dst_node=dst.node.name,
        )
        for (src, dst, port, allowed), r in zip(pairs, results, strict=True)
    ]


@dataclass
class Traffic:
    """Rounds of the ALLOWED and DENIED connections in a thread, until stopped."""

    layout: LabLayout
    interval: float = 0.1  # between rounds
    denied_timeout: float = 0.3
    conns: list[Conn] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None

    def _pairs(self) -> list[tuple[PodLayout, PodLayout, int, bool]]:
        p = self.layout.pod
        return [(p(s), p(d), port, True) for s, d, port in ALLOWED] + [
            (p(s), p(d), port, False) for s, d, port in DENIED
        ]

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="srl-traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        pairs = self._pairs()
        try:
            while not self._stop.is_set():
                got = connect_round(pairs, self.denied_timeout)
                with self._lock:
                    self.conns.extend(got)
                self._stop.wait(self.interval)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def snapshot(self) -> list[Conn]:
        with self._lock:
            return list(self.conns)

    def wait_rounds(self, n: int, timeout: float = 30.0) -> None:
        """Wait until `n` more rounds have completed."""
        per_round = len(ALLOWED) + len(DENIED)
        target = len(self.snapshot()) + n * per_round
        deadline = time.monotonic() + timeout
        while len(self.snapshot()) < target:
            if self.error is not None or time.monotonic() > deadline:
                raise AssertionError(f"traffic stalled: {self.error!r}")
            time.sleep(0.05)

    def stop(self) -> list[Conn]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the traffic loop failed: {self.error!r}") from self.error
        return self.snapshot()
