"""The hubble CLI's flag semantics: filter flags into GetFlowsRequest filters, and the
selectors (--last, --first, --all, --follow, --since, --until) into the request.

Follows hubble/cmd/observe (flows_filter.go, observe.go): each flag adds a value to a
"left" and a "right" FlowFilter (``--pod`` puts the value in the left filter's
source_pod and the right filter's destination_pod, ``--from-pod`` in both filters'
source_pod); the two are OR'd, and merged into one when equal. Namespace flags are
applied when the filters are materialised: ``--namespace x`` becomes source pod
``x/`` (left) and destination pod ``x/`` (right), and pod or service names without
a namespace get it. ``--not`` sends the next flag to the blacklist instead.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2

from sensilla.filters import monitor
from sensilla.protos import flow_pb2, observer_pb2

DEFAULT_LAST = 20  # Hubble's defaults.FlowPrintCount

FILTER_FLAGS = (
    "uuid",
    "node-name",
    "cluster",
    "protocol",
    "tcp-flags",
    "type",
    "verdict",
    "drop-reason-desc",
    "from-ip",
    "ip",
    "to-ip",
    "ipv4",
    "ipv6",
    "ip-version",
    "from-pod",
    "pod",
    "to-pod",
    "from-namespace",
    "namespace",
    "to-namespace",
    "from-all-namespaces",
    "all-namespaces",
    "to-all-namespaces",
    "from-label",
    "label",
    "to-label",
    "from-service",
    "service",
    "to-service",
    "from-port",
    "port",
    "to-port",
    "from-workload",
    "workload",
    "to-workload",
    "from-identity",
    "identity",
    "to-identity",
    "traffic-direction",
    "interface",
)

CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-ip", "ip", "from-namespace", "namespace", "from-all-namespaces", "all-namespaces"),
    ("from-ip", "ip", "from-pod", "pod"),
    ("to-ip", "ip", "to-namespace", "namespace", "to-all-namespaces", "all-namespaces"),
    ("to-ip", "ip", "to-pod", "pod"),
    ("to-pod", "namespace", "all-namespaces"),
    ("from-pod", "namespace", "all-namespaces"),
    ("to-service", "namespace", "all-namespaces"),
    ("from-service", "namespace", "all-namespaces"),
    ("label", "from-label"),
    ("label", "to-label"),
    ("service", "from-service"),
    ("service", "to-service"),
    ("verdict",),
    ("drop-reason-desc",),
    ("type",),
    ("protocol",),
    ("port", "to-port"),
    ("port", "from-port"),
    ("identity", "to-identity"),
    ("identity", "from-identity"),
    ("workload", "to-workload"),
    ("workload", "from-workload"),
    ("node-name", "cluster"),
    ("tcp-flags",),
    ("uuid",),
    ("traffic-direction",),
)


_VERDICTS = frozenset(flow_pb2.Verdict.keys())
_DROP_REASONS = frozenset(flow_pb2.DropReason.keys())


class FlagError(ValueError):
    """A flag value or combination the hubble CLI rejects (message as Hubble's)."""


def go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _namespace_of(name: str) -> str:
    parts = name.split("/")
    return parts[0] if len(parts) > 1 else ""


def _add_namespaces(values: list[str], namespaces: list[str]) -> list[str]:
    if not namespaces or not values:
        return values
    out = []
    for v in values:
        if "/" in v:
            out.append(v)
            continue
        out.extend(f"{ns}/{v}" for ns in namespaces)
    return out


def _apply_source_namespaces(ff: flow_pb2.FlowFilter, namespaces: list[str]) -> None:
    pods = list(ff.source_pod) or ([""] if not ff.source_service else [])
    services = list(ff.source_service)
    ff.ClearField("source_pod")
    ff.ClearField("source_service")
    ff.source_pod.extend(_add_namespaces(pods, namespaces))
    ff.source_service.extend(_add_namespaces(services, namespaces))


def _apply_destination_namespaces(ff: flow_pb2.FlowFilter, namespaces: list[str]) -> None:
    pods = list(ff.destination_pod) or ([""] if not ff.destination_service else [])
    services = list(ff.destination_service)
    ff.ClearField("destination_pod")
    ff.ClearField("destination_service")
    ff.destination_pod.extend(_add_namespaces(pods, namespaces))
    ff.destination_service.extend(_add_namespaces(services, namespaces))


@dataclass
class _Tracker:
    left: flow_pb2.FlowFilter | None = None
    right: flow_pb2.FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def apply_left(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        if self.left is None:
            self.left = flow_pb2.FlowFilter()
        update(self.left)

    def apply_right(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        if self.right is None:
            self.right = flow_pb2.FlowFilter()
        update(self.right)

    def apply(self, update: Callable[[flow_pb2.FlowFilter], None]) -> None:
        self.apply_left(update)
        self.apply_right(update)

    def check_conflicts(self) -> None:
        for group in CONFLICTS:
            for flag in group:
                if flag in self.changed:
                    for other in group:
                        if other != flag and other in self.changed:
                            raise FlagError(f"filters --{flag} and --{other} cannot be combined")

    def check_namespace_conflicts(self, ff: flow_pb2.FlowFilter | None) -> None:
        if ff is None:
            return

        def conflicts(namespaces: list[str], names: Sequence[str]) -> None:
            for ns in namespaces:
                for name in names:
                    nn = _namespace_of(name)
                    if nn and nn != ns:
                        raise FlagError(
                            f"namespace conflict: {go_quote(ns)} does not contain {go_quote(name)}"
                        )

        def inconsistent(pods: Sequence[str], services: Sequence[str]) -> None:
            for pod in pods:
                pod_ns = _namespace_of(pod)
                if not pod_ns:
                    continue
                for svc in services:
                    if _namespace_of(svc) != pod_ns:
                        svc_q, pod_q = go_quote(svc), go_quote(pod_ns)
                        raise FlagError(f"namespace of service {svc_q} conflict with pod {pod_q}")

        conflicts(self.ns, ff.source_pod)
        conflicts(self.ns, ff.source_service)
        conflicts(self.ns, ff.destination_pod)
        conflicts(self.ns, ff.destination_service)
        conflicts(self.src_ns, ff.source_pod)
        conflicts(self.src_ns, ff.source_service)
        conflicts(self.dst_ns, ff.destination_pod)
        conflicts(self.dst_ns, ff.destination_service)
        inconsistent(ff.source_pod, ff.source_service)
        inconsistent(ff.destination_pod, ff.destination_service)

    def flow_filters(self) -> list[flow_pb2.FlowFilter]:
        if self.left is None and self.right is None and not (self.ns or self.src_ns or self.dst_ns):
            return []
        left = flow_pb2.FlowFilter()
        right = flow_pb2.FlowFilter()
        if self.left is not None:
            left.CopyFrom(self.left)
        if self.right is not None:
            right.CopyFrom(self.right)
        if self.dst_ns:
            _apply_destination_namespaces(left, self.dst_ns)
            _apply_destination_namespaces(right, self.dst_ns)
        if self.src_ns:
            _apply_source_namespaces(left, self.src_ns)
            _apply_source_namespaces(right, self.src_ns)
        if self.ns:
            _apply_source_namespaces(left, self.ns)
            _apply_destination_namespaces(right, self.ns)
        if left == right:
            return [left]
        return [left, right]


def _parse_uint(text: str, bits: int) -> int | None:
    if not re.fullmatch(r"[0-9]+", text):
        return None
    value = int(text)
    return value if value < 2**bits else None


def _to_int32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


def parse_event_type(value: str) -> flow_pb2.EventTypeFilter:
    """``--type TYPE[:SUBTYPE]`` (names like trace, drop, policy-verdict; trace
    sub-types like to-endpoint; or numbers)."""
    ef = flow_pb2.EventTypeFilter()
    name, sep, sub = value.partition(":")
    known = monitor.MESSAGE_TYPE_NAMES.get(name)
    if known is not None:
        ef.type = known
    else:
        t = _parse_uint(name, 32)
        if t is None:
            raise FlagError(
                f"unable to parse type '{name}', not a known type name and unable to parse as "
                "numeric value"
            )
        ef.type = _to_int32(t)
    if sep:
        if known == monitor.MESSAGE_TYPE_TRACE:
            for point, point_name in monitor.TRACE_OBSERVATION_POINTS.items():
                if sub == point_name:
                    ef.match_sub_type, ef.sub_type = True, point
                    break
        elif known == monitor.MESSAGE_TYPE_AGENT and sub in monitor.AGENT_EVENT_SUBTYPES:
            ef.match_sub_type, ef.sub_type = True, monitor.AGENT_EVENT_SUBTYPES[sub]
        if not ef.match_sub_type:
            st = _parse_uint(sub, 32)
            if st is None:
                raise FlagError(
                    f"unable to parse event sub-type '{sub}', not a known sub-type name and "
                    "unable to parse as numeric value"
                )
            ef.match_sub_type, ef.sub_type = True, _to_int32(st)
    return ef


def parse_tcp_flags(value: str) -> flow_pb2.TCPFlags:
    flags = flow_pb2.TCPFlags()
    for name in value.split(","):
        upper = name.upper()
        if upper not in ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"):
            raise FlagError(f"unknown tcp flag: {name}")
        setattr(flags, upper, True)
    return flags


def parse_ip_version(value: str) -> int:
    v = value.lower()
    if v in ("4", "v4", "ipv4", "ip4"):
        return flow_pb2.IPv4
    if v in ("6", "v6", "ipv6", "ip6"):
        return flow_pb2.IPv6
    return flow_pb2.IP_NOT_USED


def parse_workload(value: str) -> flow_pb2.Workload:
    if not value:
        return flow_pb2.Workload()
    kind, sep, name = value.partition("/")
    if not sep:
        return flow_pb2.Workload(name=value)
    return flow_pb2.Workload(kind=kind, name=name)


def _go_uint32_base0(text: str) -> int | None:
    """Go's strconv.ParseUint(text, 0, 32): decimal, 0x hex, 0o / leading-0 octal, 0b."""
    m = re.fullmatch(
        r"0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|0([0-7]*)|([1-9][0-9]*)", text
    )
    if not m:
        return None
    hexd, octd, bind, oct0, dec = m.groups()
    if hexd is not None:
        value = int(hexd, 16)
    elif octd is not None:
        value = int(octd, 8)
    elif bind is not None:
        value = int(bind, 2)
    elif oct0 is not None:
        value = int(oct0 or "0", 8)
    else:
        value = int(dec)
    return value if value < 2**32 else None


def parse_identity(value: str) -> int:
    reserved = monitor.RESERVED_IDENTITIES.get(value)
    if reserved is not None:
        return reserved
    number = _go_uint32_base0(value)
    if number is None:
        names = " ".join(monitor.RESERVED_IDENTITIES)
        raise FlagError(f"invalid security identity, expected one of [{names}] or a numeric value")
    return number


class FlowFilterBuilder:
    """Feed filter flags in command-line order with :meth:`set`; read the result from
    :meth:`whitelist` and :meth:`blacklist`."""

    def __init__(self) -> None:
        self._white: _Tracker | None = None
        self._black: _Tracker | None = None
        self.blacklisting = False

    def set(self, name: str, value: str = "") -> None:
        if name == "not":
            if self.blacklisting:
                raise FlagError("consecutive --not statements")
            self.blacklisting = True
            return
        if name not in FILTER_FLAGS:
            raise FlagError(f"unknown filter flag --{name}")
        if self.blacklisting:
            self.blacklisting = False
            if self._black is None:
                self._black = _Tracker()
            tracker = self._black
        else:
            if self._white is None:
                self._white = _Tracker()
            tracker = self._white
        self._set(tracker, name, value)

    def check_complete(self) -> None:
        if self.blacklisting:
            raise FlagError("trailing --not found in the arguments")

    def whitelist(self) -> list[flow_pb2.FlowFilter]:
        return self._white.flow_filters() if self._white else []

    def blacklist(self) -> list[flow_pb2.FlowFilter]:
        return self._black.flow_filters() if self._black else []

    def _set(self, t: _Tracker, name: str, val: str) -> None:
        if name not in t.changed:
            t.changed.append(name)
        t.check_conflicts()

        def both(attr: str, item: object) -> None:
            t.apply(lambda f: getattr(f, attr).append(item))

        def split(src_attr: str, dst_attr: str, item: object) -> None:
            t.apply_left(lambda f: getattr(f, src_attr).append(item))
            t.apply_right(lambda f: getattr(f, dst_attr).append(item))

        if name == "uuid":
            both("uuid", val)
        elif name == "pod":
            split("source_pod", "destination_pod", val)
        elif name == "from-pod":
            both("source_pod", val)
        elif name == "to-pod":
            both("destination_pod", val)
        elif name == "ip":
            split("source_ip", "destination_ip", val)
        elif name == "from-ip":
            both("source_ip", val)
        elif name == "to-ip":
            both("destination_ip", val)
        elif name == "ipv4":
            both("ip_version", flow_pb2.IPv4)
        elif name == "ipv6":
            both("ip_version", flow_pb2.IPv6)
        elif name == "ip-version":
            both("ip_version", parse_ip_version(val))
        elif name == "label":
            split("source_label", "destination_label", val)
        elif name == "from-label":
            both("source_label", val)
        elif name == "to-label":
            both("destination_label", val)
        elif name == "namespace":
            t.ns.append(val)
        elif name == "from-namespace":
            t.src_ns.append(val)
        elif name == "to-namespace":
            t.dst_ns.append(val)
        elif name == "all-namespaces":
            t.ns.append("")
        elif name == "from-all-namespaces":
            t.src_ns.append("")
        elif name == "to-all-namespaces":
            t.dst_ns.append("")
        elif name == "service":
            split("source_service", "destination_service", val)
        elif name == "from-service":
            both("source_service", val)
        elif name == "to-service":
            both("destination_service", val)
        elif name == "port":
            split("source_port", "destination_port", val)
        elif name == "from-port":
            both("source_port", val)
        elif name == "to-port":
            both("destination_port", val)
        elif name == "verdict":
            if val not in _VERDICTS:
                raise FlagError(f"invalid --verdict value: {val}")
            both("verdict", flow_pb2.Verdict.Value(val))
        elif name == "drop-reason-desc":
            if val == "":
                raise FlagError("empty --drop-reason-desc value")
            if val not in _DROP_REASONS:
                raise FlagError(f"invalid --drop-reason-desc value: {val}")
            both("drop_reason_desc", flow_pb2.DropReason.Value(val))
        elif name == "type":
            ef = parse_event_type(val)
            t.apply(lambda f: f.event_type.add().CopyFrom(ef))
        elif name == "protocol":
            both("protocol", val)
        elif name in ("workload", "from-workload", "to-workload"):
            w = parse_workload(val)
            if name in ("workload", "from-workload"):
                (t.apply_left if name == "workload" else t.apply)(
                    lambda f: f.source_workload.add().CopyFrom(w)
                )
            if name in ("workload", "to-workload"):
                (t.apply_right if name == "workload" else t.apply)(
                    lambda f: f.destination_workload.add().CopyFrom(w)
                )
        elif name == "identity":
            split("source_identity", "destination_identity", parse_identity(val))
        elif name == "from-identity":
            both("source_identity", parse_identity(val))
        elif name == "to-identity":
            both("destination_identity", parse_identity(val))
        elif name == "node-name":
            both("node_name", val)
        elif name == "cluster":
            both("node_name", val + "/")
        elif name == "tcp-flags":
            flags = parse_tcp_flags(val)
            t.apply(lambda f: f.tcp_flags.add().CopyFrom(flags))
        elif name == "traffic-direction":
            td = val.lower()
            if td == "ingress":
                both("traffic_direction", flow_pb2.INGRESS)
            elif td == "egress":
                both("traffic_direction", flow_pb2.EGRESS)
            else:
                raise FlagError(f"{td}: invalid traffic direction, expected ingress or egress")
        elif name == "interface":
            t.apply(lambda f: f.interface.append(flow_pb2.NetworkInterface(name=val)))
        t.check_namespace_conflicts(t.left)
        t.check_namespace_conflicts(t.right)


# --- time selectors -----------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> int | None:
    """Go's time.ParseDuration, in nanoseconds (None when invalid)."""
    s = text
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        return None
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * round(total)


_TIME_LAYOUTS = [
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), "date"),
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})(Z|[+-]\d{2}:\d{2})"), "hour"),
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(Z|[+-]\d{2}:\d{2})"), "minute"),
    (
        re.compile(
            r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})"
        ),
        "rfc3339",
    ),
]
_RFC1123Z = re.compile(
    r"[A-Z][a-z]{2}, (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _zone(text: str) -> dt.timezone:
    if text == "Z":
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    hh, mm = int(text[1:3]), int(text[-2:])
    return dt.timezone(sign * dt.timedelta(hours=hh, minutes=mm))


def parse_time(text: str, now: Callable[[], dt.datetime] | None = None) -> timestamp_pb2.Timestamp:
    """Hubble's hubtime.FromString: a Go duration before now ("5m", "1h30m") or an
    absolute time (RFC3339 with optional fraction, "2006-01-02", "2006-01-02T15Z",
    "2006-01-02T15:04Z", RFC1123Z)."""
    current = (now or (lambda: dt.datetime.now(dt.UTC)))()
    ns = parse_go_duration(text)
    ts = timestamp_pb2.Timestamp()
    if ns is not None:
        moment = current - dt.timedelta(microseconds=ns / 1000)
        ts.FromDatetime(moment)
        return ts
    try:
        for pattern, kind in _TIME_LAYOUTS:
            m = pattern.fullmatch(text)
            if not m:
                continue
            g = m.groups()
            if kind == "date":
                moment = dt.datetime(int(g[0]), int(g[1]), int(g[2]), tzinfo=dt.UTC)
            elif kind == "hour":
                moment = dt.datetime(int(g[0]), int(g[1]), int(g[2]), int(g[3]), tzinfo=_zone(g[4]))
            elif kind == "minute":
                moment = dt.datetime(
                    int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), tzinfo=_zone(g[5])
                )
            else:
                moment = dt.datetime(
                    int(g[0]),
                    int(g[1]),
                    int(g[2]),
                    int(g[3]),
                    int(g[4]),
                    int(g[5]),
                    tzinfo=_zone(g[7]),
                )
            ts.FromDatetime(moment)
            if kind == "rfc3339" and g[6]:
                ts.nanos = int(g[6][1:].ljust(9, "0"))
            return ts
        m = _RFC1123Z.fullmatch(text)
        if m and m.group(2) in _MONTHS:
            g = m.groups()
            zone = dt.timezone(
                (-1 if g[6][0] == "-" else 1)
                * dt.timedelta(hours=int(g[6][1:3]), minutes=int(g[6][3:]))
            )
            moment = dt.datetime(
                int(g[2]),
                _MONTHS.index(g[1]) + 1,
                int(g[0]),
                int(g[3]),
                int(g[4]),
                int(g[5]),
                tzinfo=zone,
            )
            ts.FromDatetime(moment)
            return ts
    except ValueError:
        pass
    raise FlagError(f"failed to convert {text} to time")


@dataclass
class Selectors:
    last: int = 0
    first: int = 0
    all: bool = False
    follow: bool = False
    since: str = ""
    until: str = ""


def build_get_flows_request(
    sel: Selectors,
    whitelist: Sequence[flow_pb2.FlowFilter],
    blacklist: Sequence[flow_pb2.FlowFilter],
    now: Callable[[], dt.datetime] | None = None,
) -> observer_pb2.GetFlowsRequest:
    """Hubble's getFlowsRequest."""
    first = sel.first > 0
    last = sel.last > 0
    if first and last:
        raise FlagError("cannot set both --first and --last")
    if first and sel.all:
        raise FlagError("cannot set both --first and --all")
    if first and sel.follow:
        raise FlagError("cannot set both --first and --follow")
    if last and sel.all:
        raise FlagError("cannot set both --last and --all")
    since = until = None
    if sel.since:
        try:
            since = parse_time(sel.since, now)
        except FlagError as exc:
            raise FlagError(f"failed to parse the since time: {exc}") from None
    if sel.until and not sel.follow:
        try:
            until = parse_time(sel.until, now)
        except FlagError as exc:
            raise FlagError(f"failed to parse the until time: {exc}") from None
    number = sel.last
    if since is None and until is None and not first:
        if sel.all:
            number = 2**64 - 1
        elif sel.last == 0 and not sel.follow:
            number = DEFAULT_LAST
    if first:
        number = sel.first
    req = observer_pb2.GetFlowsRequest(
        number=number,
        follow=sel.follow,
        first=first,
        whitelist=list(whitelist),
        blacklist=list(blacklist),
    )
    if since is not None:
        req.since.CopyFrom(since)
    if until is not None:
        req.until.CopyFrom(until)
    return req
