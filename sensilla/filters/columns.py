"""The flat columns a stored flow is filtered, grouped and ordered on.

This is the contract between the filter module (which compiles Hubble filters into
SQL over these names) and the store (whose `flows` table must have every column
below, with these ClickHouse types, alongside the serialized flow). Types are chosen
to run on ClickHouse 18.16 as well as on chDB: no DateTime64, no IPv4/IPv6 domains,
no Map.

`flow_row(flow)` in this package turns a flow.Flow into exactly these values.
"""

from __future__ import annotations

# name -> ClickHouse type
FLOW_COLUMNS: dict[str, str] = {
    # position: (collector_id, boot_id, seq) identifies a flow (deduplication key)
    "collector_id": "String",
    "boot_id": "UInt64",
    "seq": "UInt64",
    # nanoseconds since the epoch, and the same in seconds for partitions and rollups
    "time_ns": "Int64",
    "time": "DateTime",
    "uuid": "String",
    "node_name": "String",
    "verdict": "UInt8",  # flow.Verdict
    "drop_reason": "UInt16",  # flow.DropReason (0 when not dropped)
    "event_type": "Int32",  # flow.CiliumEventType.type
    "event_subtype": "Int32",  # flow.CiliumEventType.sub_type
    "traffic_direction": "UInt8",  # flow.TrafficDirection
    "is_reply": "UInt8",  # 0 unknown, 1 false, 2 true (is_reply is a BoolValue)
    "ip_version": "UInt8",  # flow.IPVersion
    # the address string as the flow carries it, "" when it is not an IP address
    "src_ip": "String",
    "dst_ip": "String",
    "protocol": "String",  # lower case: tcp, udp, icmpv4, icmpv6, sctp, or ""
    "src_port": "UInt16",
    "dst_port": "UInt16",
    "tcp_flags": "UInt16",  # bit i set = flag i of TCP_FLAG_BITS present
    "icmp_type": "UInt8",
    "icmp_code": "UInt8",
    "src_namespace": "String",
    "src_pod": "String",
    "src_identity": "UInt32",
    "src_labels": "Array(String)",  # "k8s:key=value" (Cilium's label form, "source:key[=value]")
    "src_workload": "String",  # the first workload's name and kind
    "src_workload_kind": "String",
    "src_service": "String",  # "namespace/name" or ""
    "dst_namespace": "String",
    "dst_pod": "String",
    "dst_identity": "UInt32",
    "dst_labels": "Array(String)",
    "dst_workload": "String",
    "dst_workload_kind": "String",
    "dst_service": "String",
    "packets": "UInt64",
    "bytes": "UInt64",
    "suppressed_drops": "UInt64",
    "policies_allowed": "Array(String)",  # "namespace/name" of ingress and egress allowed_by
    "policies_denied": "Array(String)",
    "interface_index": "UInt32",
    "interface_name": "String",
    # the addresses as 128-bit numbers (IPv4 stored IPv4-mapped, ::ffff:a.b.c.d) in two
    # halves, for CIDR filters; (0, 0) when src_ip/dst_ip is ""
    "src_ip_hi": "UInt64",
    "src_ip_lo": "UInt64",
    "dst_ip_hi": "UInt64",
    "dst_ip_lo": "UInt64",
}

# Order of flags in the tcp_flags bitmask (the field order of flow.TCPFlags).
TCP_FLAG_BITS: tuple[str, ...] = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
