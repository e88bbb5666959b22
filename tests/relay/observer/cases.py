"""Filter cases for GetFlows over stored flows: every filter kind alone, several
values, combinations (whitelist OR, whitelist and blacklist, blacklist only), with
the request selectors (number, first, since, until). The expected answer is always
computed in memory with the predicate of the same compiled filter (Hubble's
semantics, sensilla.filters), never by hand."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sensilla.filters import compile_request_filters
from sensilla.protos import flow_pb2
from tests.relay.observer.flowgen import HOSTS, PODS, WORLD

F = flow_pb2.FlowFilter
Key = tuple[int, str, int, int]


@dataclass
class Case:
    name: str
    whitelist: list[flow_pb2.FlowFilter] = field(default_factory=list)
    blacklist: list[flow_pb2.FlowFilter] = field(default_factory=list)

    def compiled(self):  # type: ignore[no-untyped-def]
        return compile_request_filters(self.whitelist, self.blacklist)


def _pod_id(ns: str, pod: str) -> int:
    return next(p.identity for p in PODS if p.namespace == ns and p.pod == pod)


def cases(uuids: Iterable[str] = ()) -> list[Case]:
    """``uuids``: some stored flows' uuids (for the uuid filter)."""
    u = [*list(uuids)[:3], "00000000-0000-0000-0000-000000000000"]
    web = next(p for p in PODS if p.namespace == "shop" and p.workload)
    return [
        # --- each filter kind alone
        Case("uuid", [F(uuid=u)]),
        Case("event_type", [F(event_type=[flow_pb2.EventTypeFilter(type=1)])]),
        Case(
            "event_subtype",
            [F(event_type=[flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=5)])],
        ),
        Case("verdict_dropped", [F(verdict=[flow_pb2.DROPPED])]),
        Case("verdict_audit_error", [F(verdict=[flow_pb2.AUDIT, flow_pb2.ERROR])]),
        Case("drop_reason", [F(drop_reason_desc=[flow_pb2.POLICY_DENIED])]),
        Case(
            "drop_reason_two",
            [F(drop_reason_desc=[flow_pb2.CT_TRUNCATED_OR_INVALID_HEADER, flow_pb2.POLICY_DENY])],
        ),
        Case("reply_true", [F(reply=[True])]),
        Case("reply_false", [F(reply=[False])]),
        Case("source_identity_world", [F(source_identity=[2])]),
        Case("destination_identity", [F(destination_identity=[_pod_id("x", "a"), 1])]),
        Case("protocol_tcp", [F(protocol=["tcp"])]),
        Case("protocol_udp_sctp", [F(protocol=["UDP", "sctp"])]),
        Case("protocol_icmp", [F(protocol=["icmp"])]),
        Case("protocol_icmpv6", [F(protocol=["icmpv6"])]),
        Case("source_cidr", [F(source_ip=["10.244.1.0/24"])]),
        Case("destination_cidr6", [F(destination_ip=["fd00:10:244:2::/64"])]),
        Case("source_ip_exact", [F(source_ip=[WORLD[0].ip4, WORLD[0].ip6])]),
        Case("destination_ip_any4", [F(destination_ip=["0.0.0.0/0"])]),
        Case("source_pod_namespace", [F(source_pod=["x/"])]),
        Case("destination_pod_prefix", [F(destination_pod=["shop/web-"])]),
        Case("source_pod_default_ns", [F(source_pod=["a"])]),
        Case("source_pod_two", [F(source_pod=["kube-system/coredns", "y/b"])]),
        Case("source_workload_name", [F(source_workload=[flow_pb2.Workload(name="web")])]),
        Case(
            "destination_workload_kind",
            [F(destination_workload=[flow_pb2.Workload(kind="StatefulSet")])],
        ),
        Case("destination_service", [F(destination_service=[f"shop/{web.workload[0]}"])]),  # type: ignore[index]
        Case("destination_service_namespace", [F(destination_service=["x/"])]),
        Case("source_label", [F(source_label=["k8s:app=web"])]),
        Case("destination_label_world", [F(destination_label=["reserved:world"])]),
        Case("source_label_in", [F(source_label=["pod in (a, b)"])]),
        Case(
            "destination_label_selector",
            [F(destination_label=["k8s:io.kubernetes.pod.namespace=y,pod!=a"])],
        ),
        Case("source_label_notexists", [F(source_label=["!pod"])]),
        Case("destination_port", [F(destination_port=["80"])]),
        Case("source_port_dns", [F(source_port=["53"])]),
        Case("destination_port_two", [F(destination_port=["443", "5432"])]),
        Case("tcp_flags_syn", [F(tcp_flags=[flow_pb2.TCPFlags(SYN=True)])]),
        Case("tcp_flags_fin_ack", [F(tcp_flags=[flow_pb2.TCPFlags(FIN=True, ACK=True)])]),
        Case("node_name", [F(node_name=["srq-worker2"])]),
        Case("node_name_glob", [F(node_name=["srq-*2"])]),
        Case("node_name_cluster", [F(node_name=["default/srq-worker"])]),
        Case("ip_version6", [F(ip_version=[flow_pb2.IPv6])]),
        Case("traffic_direction", [F(traffic_direction=[flow_pb2.EGRESS])]),
        Case("interface_index", [F(interface=[flow_pb2.NetworkInterface(index=11)])]),
        Case("interface_name", [F(interface=[flow_pb2.NetworkInterface(name="lxc0002ab2")])]),
        # --- combined
        Case(
            "or_of_two",
            [
                F(source_pod=["x/"], verdict=[flow_pb2.DROPPED]),
                F(destination_label=["reserved:world"]),
            ],
        ),
        Case("white_and_black", [F(source_pod=["shop/"])], [F(destination_port=["5432"])]),
        Case("black_only", [], [F(protocol=["udp"]), F(verdict=[flow_pb2.FORWARDED])]),
        Case(
            "one_filter_many_fields",
            [
                F(
                    source_pod=["y/"],
                    protocol=["tcp"],
                    tcp_flags=[flow_pb2.TCPFlags(SYN=True)],
                    reply=[False],
                    ip_version=[flow_pb2.IPv4],
                )
            ],
        ),
        Case(
            "everything",
            [
                F(
                    destination_pod=["shop/", "x/"],
                    verdict=[flow_pb2.FORWARDED, flow_pb2.DROPPED],
                    node_name=["srq-*"],
                ),
                F(
                    source_identity=[h.identity for h in HOSTS],
                    traffic_direction=[flow_pb2.INGRESS],
                ),
            ],
            [
                F(source_label=["k8s:app=coredns"]),
                F(destination_port=["9090"], protocol=["tcp"]),
                F(interface=[flow_pb2.NetworkInterface(index=13)]),
            ],
        ),
        Case("not_world_not_host", [], [F(source_label=["reserved:world", "reserved:host"])]),
    ]
