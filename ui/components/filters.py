"""Hubble's `observe` filter flags, turned into flow.FlowFilter messages.

The Flows page offers the same filters as ``sensilla observe`` (which follows
``hubble observe``). The flags are applied in order, like on a command line:

- a ``from-``/``to-`` flag (``from-pod``, ``to-ip``, …) constrains one end of the
  flow; flags without a side (``pod``, ``ip``, ``label``, ``identity``, ``port``,
  ``namespace``) match either end: the filter splits into a source-side and a
  destination-side filter, ORed;
- values of the same flag are ORed; different flags are ANDed;
- ``namespace`` flags qualify pod names given without a namespace, and alone they
  select every pod of the namespace (``x/`` prefixes);
- a negated flag (``--not`` on the command line, ``!value`` in the UI) goes to the
  blacklist instead, built the same way.

This is a small local helper; when ``sensilla/filters`` grows a builder for the
command line, the UI switches to it.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sensilla.protos import flow_pb2

# Cilium's reserved identities (numbering as in Cilium).
RESERVED_IDENTITIES: dict[str, int] = {
    "host": 1,
    "world": 2,
    "unmanaged": 3,
    "health": 4,
    "init": 5,
    "remote-node": 6,
    "kube-apiserver": 7,
}

# Cilium monitor message types (`--type`).
EVENT_TYPES: dict[str, int] = {
    "drop": 1,
    "debug": 2,
    "capture": 3,
    "trace": 4,
    "policy-verdict": 5,
    "recorder": 6,
    "trace-sock": 7,
    "l7": 129,
    "agent": 130,
}

PROTOCOLS = ("tcp", "udp", "sctp", "icmpv4", "icmpv6")
_VERDICT_NAMES = flow_pb2.Verdict.DESCRIPTOR.values_by_name
_DROP_REASON_NAMES = flow_pb2.DropReason.DESCRIPTOR.values_by_name
VERDICTS = tuple(n for n in _VERDICT_NAMES if n != "VERDICT_UNKNOWN")
DROP_REASONS = tuple(n for n in _DROP_REASON_NAMES if n != "DROP_REASON_UNKNOWN")

# Flags whose values apply to either end (left = source, right = destination).
EITHER = {"pod", "ip", "label", "identity", "port", "namespace"}
FLAGS = (
    "from-pod", "to-pod", "pod",
    "from-namespace", "to-namespace", "namespace",
    "from-label", "to-label", "label",
    "from-ip", "to-ip", "ip",
    "from-identity", "to-identity", "identity",
    "from-port", "to-port", "port",
    "protocol", "verdict", "drop-reason-desc", "node-name", "type",
)  # fmt: skip

# Flags that cannot be combined in one list (as in hubble observe).
CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-ip", "ip", "from-namespace", "namespace"),
    ("from-ip", "ip", "from-pod", "pod"),
    ("to-ip", "ip", "to-namespace", "namespace"),
    ("to-ip", "ip", "to-pod", "pod"),
    ("to-pod", "namespace"),
    ("from-pod", "namespace"),
    ("label", "from-label"),
    ("label", "to-label"),
    ("port", "to-port"),
    ("port", "from-port"),
    ("identity", "to-identity"),
    ("identity", "from-identity"),
)


_DIGITS = re.compile(r"[0-9]{1,10}")


class FilterInputError(ValueError):
    """A filter value or combination that cannot be used; names the flag."""

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        super().__init__(f"--{flag}: {message}")


@dataclass(frozen=True)
class Condition:
    flag: str
    value: str
    negate: bool = False


@dataclass
class _Tracker:
    left: flow_pb2.FlowFilter | None = None
    right: flow_pb2.FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def _both(self) -> tuple[flow_pb2.FlowFilter, flow_pb2.FlowFilter]:
        if self.left is None:
            self.left = flow_pb2.FlowFilter()
        if self.right is None:
            self.right = flow_pb2.FlowFilter()
        return self.left, self.right

    def apply(self, fn: object) -> None:
        left, right = self._both()
        fn(left)  # type: ignore[operator]
        fn(right)  # type: ignore[operator]

    def apply_lr(self, fn_left: object, fn_right: object) -> None:
        left, right = self._both()
        fn_left(left)  # type: ignore[operator]
        fn_right(right)  # type: ignore[operator]

    def filters(self) -> list[flow_pb2.FlowFilter]:
        if self.left is None and self.right is None and not (
            self.ns or self.src_ns or self.dst_ns
        ):
            return []
        left, right = self._both()
        if self.dst_ns:
            _ns_dst(left, self.dst_ns)
            _ns_dst(right, self.dst_ns)
        if self.src_ns:
            _ns_src(left, self.src_ns)
            _ns_src(right, self.src_ns)
        if self.ns:
            _ns_src(left, self.ns)
            _ns_dst(right, self.ns)
        if left == right:
            return [left]
        return [left, right]


def _qualify(names: Sequence[str], namespaces: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if "/" in name:
            out.append(name)
        else:
            out.extend(f"{ns}/{name}" for ns in namespaces)
    return out


def _ns_src(f: flow_pb2.FlowFilter, namespaces: Sequence[str]) -> None:
    pods = list(f.source_pod) or [""]
    del f.source_pod[:]
    f.source_pod.extend(_qualify(pods, namespaces))


def _ns_dst(f: flow_pb2.FlowFilter, namespaces: Sequence[str]) -> None:
    pods = list(f.destination_pod) or [""]
    del f.destination_pod[:]
    f.destination_pod.extend(_qualify(pods, namespaces))


def _number(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '¹', which int() refuses)."""
    return bool(_DIGITS.fullmatch(text))


def _identity(flag: str, value: str) -> int:
    v = value.strip().lower()
    v = v.removeprefix("reserved:")
    if v in RESERVED_IDENTITIES:
        return RESERVED_IDENTITIES[v]
    if _number(v) and int(v) < 2**32:
        return int(v)
    raise FilterInputError(
        flag, f"{value!r} is not an identity (a number or one of {', '.join(RESERVED_IDENTITIES)})"
    )


def _port(flag: str, value: str) -> str:
    if not _number(value) or int(value) > 65535:
        raise FilterInputError(flag, f"{value!r} is not a port number (0-65535)")
    return str(int(value))


def _ip(flag: str, value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise FilterInputError(flag, f"{value!r} is not an IP address or CIDR") from None
    return value


def _event_type(flag: str, value: str) -> flow_pb2.EventTypeFilter:
    head, _, sub = value.partition(":")
    if head in EVENT_TYPES:
        etype = EVENT_TYPES[head]
    elif _number(head):
        etype = int(head)
    else:
        raise FilterInputError(flag, f"unknown event type {value!r} "
                                     f"(one of {', '.join(EVENT_TYPES)} or a number)")
    out = flow_pb2.EventTypeFilter(type=etype)
    if sub:
        if not _number(sub):
            raise FilterInputError(flag, f"event sub-type {sub!r} must be a number")
        out.match_sub_type = True
        out.sub_type = int(sub)
    return out


def _set(t: _Tracker, flag: str, raw: str) -> None:
    value = raw.strip()
    if not value:
        raise FilterInputError(flag, "empty value")
    if flag not in t.changed:
        t.changed.append(flag)
        for group in CONFLICTS:
            if flag in group:
                for other in group:
                    if other != flag and other in t.changed:
                        raise FilterInputError(flag, f"cannot be combined with --{other}")
    if flag == "pod":
        t.apply_lr(lambda f: f.source_pod.append(value),
                   lambda f: f.destination_pod.append(value))
    elif flag == "from-pod":
        t.apply(lambda f: f.source_pod.append(value))
    elif flag == "to-pod":
        t.apply(lambda f: f.destination_pod.append(value))
    elif flag == "namespace":
        t.ns.append(value)
    elif flag == "from-namespace":
        t.src_ns.append(value)
    elif flag == "to-namespace":
        t.dst_ns.append(value)
    elif flag == "label":
        t.apply_lr(lambda f: f.source_label.append(value),
                   lambda f: f.destination_label.append(value))
    elif flag == "from-label":
        t.apply(lambda f: f.source_label.append(value))
    elif flag == "to-label":
        t.apply(lambda f: f.destination_label.append(value))
    elif flag == "ip":
        ip = _ip(flag, value)
        t.apply_lr(lambda f: f.source_ip.append(ip), lambda f: f.destination_ip.append(ip))
    elif flag == "from-ip":
        ip = _ip(flag, value)
        t.apply(lambda f: f.source_ip.append(ip))
    elif flag == "to-ip":
        ip = _ip(flag, value)
        t.apply(lambda f: f.destination_ip.append(ip))
    elif flag == "identity":
        ident = _identity(flag, value)
        t.apply_lr(lambda f: f.source_identity.append(ident),
                   lambda f: f.destination_identity.append(ident))
    elif flag == "from-identity":
        ident = _identity(flag, value)
        t.apply(lambda f: f.source_identity.append(ident))
    elif flag == "to-identity":
        ident = _identity(flag, value)
        t.apply(lambda f: f.destination_identity.append(ident))
    elif flag == "port":
        port = _port(flag, value)
        t.apply_lr(lambda f: f.source_port.append(port),
                   lambda f: f.destination_port.append(port))
    elif flag == "from-port":
        port = _port(flag, value)
        t.apply(lambda f: f.source_port.append(port))
    elif flag == "to-port":
        port = _port(flag, value)
        t.apply(lambda f: f.destination_port.append(port))
    elif flag == "protocol":
        proto = value.lower()
        t.apply(lambda f: f.protocol.append(proto))
    elif flag == "verdict":
        name = value.upper()
        if name not in _VERDICT_NAMES:
            raise FilterInputError(flag,
                                   f"unknown verdict {value!r} (one of {', '.join(VERDICTS)})")
        num = flow_pb2.Verdict.Value(name)
        t.apply(lambda f: f.verdict.append(num))  # type: ignore[arg-type]
    elif flag == "drop-reason-desc":
        name = value.upper()
        if name not in _DROP_REASON_NAMES:
            raise FilterInputError(flag, f"unknown drop reason {value!r}")
        num = flow_pb2.DropReason.Value(name)
        t.apply(lambda f: f.drop_reason_desc.append(num))  # type: ignore[arg-type]
    elif flag == "node-name":
        t.apply(lambda f: f.node_name.append(value))
    elif flag == "type":
        etf = _event_type(flag, value)
        t.apply(lambda f: f.event_type.append(etf))
    else:
        raise FilterInputError(flag, "unknown filter")


def build(conditions: Iterable[Condition]) -> tuple[list[flow_pb2.FlowFilter],
                                                     list[flow_pb2.FlowFilter]]:
    """(whitelist, blacklist) for the conditions, in order."""
    white, black = _Tracker(), _Tracker()
    for c in conditions:
        _set(black if c.negate else white, c.flag, c.value)
    return white.filters(), black.filters()


def split_values(text: str) -> list[tuple[str, bool]]:
    """``"a, !b"`` → ``[("a", False), ("b", True)]``: comma-separated values, ``!``
    negates one value (``--not``)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        negate = part.startswith("!")
        value = part[1:].strip() if negate else part
        if value:
            out.append((value, negate))
    return out


def conditions_from_form(fields: dict[str, str], choices: dict[str, tuple[list[str], bool]]
                         ) -> list[Condition]:
    """Conditions from the Flows page's form: ``fields`` maps a flag to a text of
    comma-separated values (``!`` negates a value); ``choices`` maps a flag to
    (selected values, negate all)."""
    out: list[Condition] = []
    for flag in FLAGS:
        if fields.get(flag):
            out.extend(Condition(flag, v, neg) for v, neg in split_values(fields[flag]))
        if flag in choices:
            values, negate = choices[flag]
            out.extend(Condition(flag, v, negate) for v in values)
    return out


def observe_command(conditions: Iterable[Condition], *, extra: Sequence[str] = ()) -> str:
    """The ``sensilla observe`` command line with the same filters."""
    words = ["sensilla", "observe"]
    for c in conditions:
        if c.negate:
            words.append("--not")
        words += [f"--{c.flag}", c.value]
    words += list(extra)
    return " ".join(shlex.quote(w) for w in words)
