"""The collector's Prometheus metrics, with Hubble's metric names under `sensilla_`.

Counters are kept in plain dicts and exported on scrape by a custom collector:
counting a batch of flows is a few dict updates per flow, with no per-flow call
into prometheus_client.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sensilla.protos import flow_pb2

_EVENT_TYPES = {1: "Drop", 4: "Trace", 5: "PolicyVerdict"}
_TRACE_POINTS = {
    flow_pb2.TO_ENDPOINT: "to-endpoint",
    flow_pb2.FROM_ENDPOINT: "from-endpoint",
}
_VERDICTS = {v.number: v.name for v in flow_pb2.Verdict.DESCRIPTOR.values}
_REASONS = {v.number: v.name for v in flow_pb2.DropReason.DESCRIPTOR.values}
_TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


def _protocol(f: flow_pb2.Flow) -> str:
    which = f.l4.WhichOneof("protocol")
    return which if which else "unknown"


class CollectorMetrics:
    """Counts what the collector sees; gauges are read from providers on scrape."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._lock = threading.Lock()
        self.flows_processed: Counter[tuple[str, str, str]] = Counter()
        self.drops: Counter[tuple[str, str]] = Counter()
        self.policy_verdicts: Counter[tuple[str, str, str]] = Counter()
        self.lost_events: Counter[str] = Counter()
        self.tcp_flags: Counter[tuple[str, str]] = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Exporter(self))  # type: ignore[arg-type]

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (doc, read)

    def observe(self, flows: Iterable[flow_pb2.Flow]) -> None:
        fp: Counter[tuple[str, str, str]] = Counter()
        drops: Counter[tuple[str, str]] = Counter()
        pv: Counter[tuple[str, str, str]] = Counter()
        tcp: Counter[tuple[str, str]] = Counter()
        for f in flows:
            etype = _EVENT_TYPES.get(f.event_type.type, str(f.event_type.type))
            if f.event_type.type == 1:
                subtype = _REASONS.get(f.drop_reason_desc, str(f.drop_reason_desc))
            else:
                subtype = _TRACE_POINTS.get(f.trace_observation_point, "")
            verdict = _VERDICTS.get(f.verdict, str(f.verdict))
            fp[(etype, subtype, verdict)] += 1
            if f.verdict == flow_pb2.DROPPED:
                drops[
                    (_REASONS.get(f.drop_reason_desc, str(f.drop_reason_desc)), _protocol(f))
                ] += 1
            direction = "ingress" if f.traffic_direction == flow_pb2.INGRESS else "egress"
            allowed = f.ingress_allowed_by or f.egress_allowed_by
            denied = f.ingress_denied_by or f.egress_denied_by
            if allowed or denied:
                action = {
                    flow_pb2.FORWARDED: "forwarded",
                    flow_pb2.DROPPED: "dropped",
                    flow_pb2.AUDIT: "audit",
                }.get(f.verdict, verdict.lower())
                pv[(direction, "l3-l4" if allowed else "none", action)] += 1
            if f.l4.HasField("TCP") and f.l4.TCP.HasField("flags"):
                family = "IPv6" if f.IP.ipVersion == flow_pb2.IPv6 else "IPv4"
                for name in _TCP_FLAGS:
                    if getattr(f.l4.TCP.flags, name):
                        tcp[(name, family)] += 1
        with self._lock:
            self.flows_processed.update(fp)
            self.drops.update(drops)
            self.policy_verdicts.update(pv)
            self.tcp_flags.update(tcp)

    def lost(self, source: str, count: int) -> None:
        if count:
            with self._lock:
                self.lost_events[source] += count

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "flows_processed": dict(self.flows_processed),
                "drops": dict(self.drops),
                "policy_verdicts": dict(self.policy_verdicts),
                "lost_events": dict(self.lost_events),
                "tcp_flags": dict(self.tcp_flags),
            }


class _Exporter:
    def __init__(self, metrics: CollectorMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Any]:
        snap = self.m.snapshot()
        fam = CounterMetricFamily(
            "sensilla_flows_processed", "Flows processed", labels=["type", "subtype", "verdict"]
        )
        for labels, n in sorted(snap["flows_processed"].items()):
            fam.add_metric(list(labels), n)
        yield fam
        fam = CounterMetricFamily("sensilla_drop", "Dropped flows", labels=["reason", "protocol"])
        for labels, n in sorted(snap["drops"].items()):
            fam.add_metric(list(labels), n)
        yield fam
        fam = CounterMetricFamily(
            "sensilla_policy_verdicts", "Policy verdicts", labels=["direction", "match", "action"]
        )
        for labels, n in sorted(snap["policy_verdicts"].items()):
            fam.add_metric(list(labels), n)
        yield fam
        fam = CounterMetricFamily(
            "sensilla_lost_events", "Events lost before reaching a consumer", labels=["source"]
        )
        for source, n in sorted(snap["lost_events"].items()):
            fam.add_metric([source], n)
        yield fam
        fam = CounterMetricFamily("sensilla_tcp_flags", "TCP flags seen", labels=["flag", "family"])
        for labels, n in sorted(snap["tcp_flags"].items()):
            fam.add_metric(list(labels), n)
        yield fam
        for name, (doc, read) in sorted(self.m.gauges.items()):
            g = GaugeMetricFamily(name, doc)
            try:
                g.add_metric([], float(read()))
            except Exception:  # a provider that fails must not break the scrape
                continue
            yield g
