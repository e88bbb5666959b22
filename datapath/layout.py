"""Python mirrors of every layout in bpf/sensilla.h (one mirror each).

tests/datapath/test_layout.py compiles a probe against the header and checks
every struct size, field offset and field size, and every constant below.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

c_u8 = ctypes.c_uint8
c_u16 = ctypes.c_uint16
c_u32 = ctypes.c_uint32
c_u64 = ctypes.c_uint64

# ---- constants (names as in sensilla.h) ----
SENSILLA_LAYOUT_VERSION = 1

DIR_INGRESS = 0
DIR_EGRESS = 1

VERDICT_FORWARDED = 1
VERDICT_DROPPED = 2
VERDICT_AUDIT = 4

DROP_POLICY_DENIED = 133
DROP_INVALID_PACKET = 134
DROP_CT_TRUNCATED_OR_INVALID_HEADER = 135
DROP_UNSUPPORTED_L3_PROTOCOL = 139
DROP_CT_MAP_INSERTION_FAILED = 155
DROP_INVALID_IPV6_EXTENSION_HEADER = 156
DROP_NO_CONFIGURATION = 165
DROP_FRAG_NOT_FOUND = 175
DROP_EP_NOT_READY = 203

IDENTITY_HOST = 1
IDENTITY_WORLD = 2

ENDPOINTS_MAX = 4096
IPCACHE_MAX = 65536
MAX_ENDPOINT_ID = 65535
POLICY_SLOTS = (MAX_ENDPOINT_ID + 1) * 2
POLICY_INNER_MAX = 65536
CT_MAX = 262144
DROPS_MAX = 16384
FRAGS_MAX = 8192
METRICS_MAX = 4096
FAILED_OUTPUT_SLOTS = 4
IPV6_MAX_EXT_HEADERS = 8

POLICY_KIND_CONFIG = 1
POLICY_KIND_RULE = 2
POLICY_KIND_CIDR4 = 3
POLICY_KIND_CIDR6 = 4
POLICY_KEY_BITS = 160
POLICY_CFG_ENFORCED = 1
POLICY_CFG_AUDIT = 2

CT_S_SEEN_REPLY = 1
CT_S_FIN_ORIG = 2
CT_S_FIN_REPLY = 4
CT_S_RST = 8
CT_S_ENDED = 16

FRAG_TIMEOUT_NS = 30 * 10**9

AGG_NONE = 0
AGG_LOW = 1
AGG_MEDIUM = 2
AGG_MAXIMUM = 3
DEFAULT_AGGREGATION = AGG_MEDIUM
DEFAULT_REPORT_INTERVAL_NS = 5 * 10**9
DEFAULT_DROP_INTERVAL_NS = 1 * 10**9
DEFAULT_CT_TCP_SYN_NS = 60 * 10**9
DEFAULT_CT_TCP_ESTABLISHED_NS = 21600 * 10**9
DEFAULT_CT_TCP_CLOSE_NS = 10 * 10**9
DEFAULT_CT_OTHER_NS = 60 * 10**9

FAILED_NO_READER = 0
FAILED_RING_FULL = 1
FAILED_OTHER = 2

EV_START = 1
EV_FLAGS = 2
EV_PERIODIC = 3
EV_END = 4
EV_DROP = 5
EV_PACKET = 6

CT_STATE_NONE = 0
CT_STATE_NEW = 1
CT_STATE_ESTABLISHED = 2
CT_STATE_REPLY = 3
CT_STATE_RELATED = 4

EVF_FRAGMENT = 1
EVF_RECHECK = 2
EVF_HOST = 4
EVF_SYNTHETIC = 8

CONSTANTS: dict[str, int] = {
    name: value for name, value in globals().items() if name.isupper() and isinstance(value, int)
}


def metric_key(direction: int, verdict: int, reason: int) -> int:
    """METRIC_KEY(dir, verdict, reason) of sensilla.h."""
    return ((direction & 1) << 11) | ((verdict & 7) << 8) | (reason & 0xFF)


def metric_key_split(key: int) -> tuple[int, int, int]:
    return (key >> 11) & 1, (key >> 8) & 7, key & 0xFF


# ---- structs ----
class EndpointInfo(ctypes.Structure):
    _fields_ = [
        ("endpoint_id", c_u32),
        ("identity", c_u32),
        ("flags", c_u32),
        ("reserved", c_u32),
    ]


class Ipcache4Key(ctypes.Structure):
    _fields_ = [("prefixlen", c_u32), ("addr", c_u8 * 4)]


class Ipcache6Key(ctypes.Structure):
    _fields_ = [("prefixlen", c_u32), ("addr", c_u8 * 16)]


class IpcacheValue(ctypes.Structure):
    _fields_ = [("identity", c_u32), ("flags", c_u32)]


class PolicyKey(ctypes.Structure):
    """kind and w[] are big-endian (stored as raw bytes here)."""

    _fields_ = [("prefixlen", c_u32), ("kind", c_u8 * 4), ("w", c_u8 * 16)]


class PolicyValue(ctypes.Structure):
    _fields_ = [
        ("id", c_u32),
        ("flags", c_u32),
        ("generation", c_u32),
        ("reserved", c_u32),
    ]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("saddr", c_u8 * 16),
        ("daddr", c_u8 * 16),
        ("sport", c_u16),
        ("dport", c_u16),
        ("ifindex", c_u32),
        ("proto", c_u8),
        ("family", c_u8),
        ("direction", c_u8),
        ("pad", c_u8),
    ]


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("created_ns", c_u64),
        ("expires_ns", c_u64),
        ("last_report_ns", c_u64),
        ("packets", c_u64),
        ("bytes", c_u64),
        ("reply_packets", c_u64),
        ("reply_bytes", c_u64),
        ("tcp_flags", c_u64),
        ("state", c_u64),
        ("remote_identity", c_u32),
        ("attribution", c_u32),
        ("generation", c_u32),
        ("verdict", c_u8),
        ("pad", c_u8 * 3),
    ]


class DropKey(ctypes.Structure):
    _fields_ = [("tuple", CtKey), ("reason", c_u32)]


class DropState(ctypes.Structure):
    _fields_ = [
        ("last_report_ns", c_u64),
        ("suppressed", c_u64),
        ("remote_identity", c_u32),
        ("attribution", c_u32),
    ]


class FragKey(ctypes.Structure):
    _fields_ = [
        ("saddr", c_u8 * 16),
        ("daddr", c_u8 * 16),
        ("id", c_u32),
        ("proto", c_u8),
        ("family", c_u8),
        ("pad", c_u16),
    ]


class FragValue(ctypes.Structure):
    _fields_ = [
        ("expires_ns", c_u64),
        ("sport", c_u16),
        ("dport", c_u16),
        ("icmp_type", c_u8),
        ("icmp_code", c_u8),
        ("pad", c_u16),
    ]


class DpConfig(ctypes.Structure):
    _fields_ = [
        ("aggregation", c_u32),
        ("flags", c_u32),
        ("report_interval_ns", c_u64),
        ("drop_interval_ns", c_u64),
        ("ct_tcp_syn_ns", c_u64),
        ("ct_tcp_established_ns", c_u64),
        ("ct_tcp_close_ns", c_u64),
        ("ct_other_ns", c_u64),
    ]


class MetricValue(ctypes.Structure):
    _fields_ = [("packets", c_u64), ("bytes", c_u64)]


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", c_u64),
        ("packets", c_u64),
        ("bytes", c_u64),
        ("reply_packets", c_u64),
        ("reply_bytes", c_u64),
        ("ifindex", c_u32),
        ("endpoint_id", c_u32),
        ("src_identity", c_u32),
        ("dst_identity", c_u32),
        ("attribution", c_u32),
        ("suppressed", c_u32),
        ("saddr", c_u8 * 16),
        ("daddr", c_u8 * 16),
        ("sport", c_u16),
        ("dport", c_u16),
        ("drop_reason", c_u16),
        ("family", c_u8),
        ("proto", c_u8),
        ("direction", c_u8),
        ("verdict", c_u8),
        ("tcp_flags", c_u8),
        ("is_reply", c_u8),
        ("ct_state", c_u8),
        ("reason", c_u8),
        ("icmp_type", c_u8),
        ("icmp_code", c_u8),
        ("pkt_len", c_u32),
        ("flags", c_u32),
    ]


# name in sensilla.h -> mirror (the layout test walks this table)
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "endpoint_info": EndpointInfo,
    "ipcache4_key": Ipcache4Key,
    "ipcache6_key": Ipcache6Key,
    "ipcache_value": IpcacheValue,
    "policy_key": PolicyKey,
    "policy_value": PolicyValue,
    "ct_key": CtKey,
    "ct_entry": CtEntry,
    "drop_key": DropKey,
    "drop_state": DropState,
    "frag_key": FragKey,
    "frag_value": FragValue,
    "dp_config": DpConfig,
    "metric_value": MetricValue,
    "flow_event": FlowEvent,
}

EVENT_SIZE = ctypes.sizeof(FlowEvent)


def _numpy_dtype(struct: type[ctypes.Structure]) -> np.dtype:
    names, formats, offsets = [], [], []
    fields: list[tuple[str, Any]] = struct._fields_  # type: ignore[assignment]
    for name, ctype in fields:
        off = getattr(struct, name).offset
        if issubclass(ctype, ctypes.Array):
            base = ctype._type_
            fmt: object = (np.dtype(f"<u{ctypes.sizeof(base)}"), ctype._length_)
        else:
            fmt = np.dtype(f"<u{ctypes.sizeof(ctype)}")
        names.append(name)
        formats.append(fmt)
        offsets.append(off)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": ctypes.sizeof(struct)}
    )


# numpy view of flow events: np.frombuffer(raw, dtype=EVENT_DTYPE)
EVENT_DTYPE = _numpy_dtype(FlowEvent)
