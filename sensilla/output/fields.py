"""The pieces of Hubble's flow printer (hubble/pkg/printer): host names, identities,
flow types, verdicts, summaries, colours and terminal escaping."""

from __future__ import annotations

import posixpath

from sensilla.filters import monitor
from sensilla.protos import flow_pb2

# fatih/color sequences, as Hubble's colorer uses them
RED, GREEN, BLUE, CYAN, MAGENTA, YELLOW = (f"\x1b[{n}m" for n in (31, 32, 34, 36, 35, 33))
RESET = "\x1b[0m"


class Colorer:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, color: str, text: str) -> str:
        return f"{color}{text}{RESET}" if self.enabled else text

    def host(self, text: str) -> str:
        return self.paint(CYAN, text)

    def port(self, text: str) -> str:
        return self.paint(YELLOW, text)

    def identity(self, text: str) -> str:
        return self.paint(MAGENTA, text)


def escape(text: str) -> str:
    """Hubble's terminal escaper: no raw ESC or CR from flow data reaches the terminal."""
    return text.replace("\x1b", "^[").replace("\r", "\\r")


def enum_name(enum: object, value: int) -> str:
    try:
        return str(enum.Name(value))  # type: ignore[attr-defined]
    except ValueError:
        return str(value)


def go_path_join(*elems: str) -> str:
    """Go's path.Join: join the non-empty elements with "/" and Clean the result."""
    parts = [e for e in elems if e]
    if not parts:
        return ""
    cleaned = posixpath.normpath("/".join(parts))
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def join_host_port(host: str, port: str) -> str:
    """Go's net.JoinHostPort."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ports(flow: flow_pb2.Flow) -> tuple[str, str]:
    if not flow.HasField("l4"):
        return "", ""
    which = flow.l4.WhichOneof("protocol")
    if which not in ("TCP", "UDP", "SCTP"):
        return "", ""
    m = getattr(flow.l4, which)
    return str(m.source_port), str(m.destination_port)


def hostname(
    color: Colorer,
    ip: str,
    port: str,
    ns: str,
    pod: str,
    svc: str,
    names: list[str],
    translate: bool,
) -> str:
    host = ip
    if translate:
        if pod:
            host = go_path_join(ns, pod)
        elif svc:
            host = go_path_join(ns, svc)
        elif names:
            host = ",".join(names)
    host = escape(host)
    if port and port != "0":
        return join_host_port(host, color.port(port))
    return host


def host_names(flow: flow_pb2.Flow, color: Colorer, translate: bool = True) -> tuple[str, str]:
    """Source and destination as "ns/pod:port" (or IP, service, DNS names)."""
    if not flow.HasField("IP"):
        if flow.HasField("ethernet"):
            return (
                color.host(escape(flow.ethernet.source)),
                color.host(escape(flow.ethernet.destination)),
            )
        return "", ""
    src_ns = dst_ns = src_pod = dst_pod = src_svc = dst_svc = ""
    if flow.HasField("source"):
        src_ns, src_pod = flow.source.namespace, flow.source.pod_name
    if flow.HasField("destination"):
        dst_ns, dst_pod = flow.destination.namespace, flow.destination.pod_name
    if flow.HasField("source_service"):
        src_ns, src_svc = flow.source_service.namespace, flow.source_service.name
    if flow.HasField("destination_service"):
        dst_ns, dst_svc = flow.destination_service.namespace, flow.destination_service.name
    sport, dport = ports(flow)
    src = hostname(
        color, flow.IP.source, sport, src_ns, src_pod, src_svc, list(flow.source_names), translate
    )
    dst = hostname(
        color,
        flow.IP.destination,
        dport,
        dst_ns,
        dst_pod,
        dst_svc,
        list(flow.destination_names),
        translate,
    )
    return color.host(src), color.host(dst)


def identity(color: Colorer, number: int) -> str:
    name = monitor.RESERVED_IDENTITY_NAMES.get(number)
    if name is not None:
        return color.identity(f"({name})")
    return color.identity(f"(ID:{number})")


def flow_type(flow: flow_pb2.Flow) -> str:
    """Hubble's GetFlowType: the observation point, drop reason or policy verdict."""
    if flow.HasField("l7"):
        l7 = flow.l7
        l7_type = enum_name(flow_pb2.L7FlowType, l7.type).lower()
        record = l7.WhichOneof("record")
        proto = "l7"
        if record == "http":
            proto = "http"
        elif record == "dns":
            proto = "dns"
            l7_type += " " + l7.dns.observation_source
        return escape(f"{proto}-{l7_type}")
    t, sub = flow.event_type.type, flow.event_type.sub_type
    if t == monitor.MESSAGE_TYPE_TRACE:
        return monitor.trace_observation_point(sub)
    if t == monitor.MESSAGE_TYPE_DROP:
        return monitor.drop_reason_text(sub)
    if t == monitor.MESSAGE_TYPE_POLICY_VERDICT:
        return (
            f"policy-verdict:{monitor.policy_match_type(flow.policy_match_type)} "
            f"{enum_name(flow_pb2.TrafficDirection, flow.traffic_direction)}"
        )
    return "UNKNOWN"


def verdict(flow: flow_pb2.Flow, color: Colorer) -> str:
    v = flow.verdict
    msg = enum_name(flow_pb2.Verdict, v)
    policy = flow.event_type.type == monitor.MESSAGE_TYPE_POLICY_VERDICT
    if v in (flow_pb2.FORWARDED, flow_pb2.REDIRECTED):
        return color.paint(GREEN, "ALLOWED" if policy else msg)
    if v in (flow_pb2.DROPPED, flow_pb2.ERROR):
        return color.paint(RED, "DENIED" if policy else msg)
    if v == flow_pb2.AUDIT:
        return color.paint(YELLOW, "AUDITED" if policy else msg)
    if v in (flow_pb2.TRACED, flow_pb2.TRANSLATED):
        return color.paint(YELLOW, msg)
    return msg


def summary(flow: flow_pb2.Flow, color: Colorer) -> str:
    text = escape(flow.Summary)
    if flow.auth_type == flow_pb2.DISABLED:
        return text
    auth = enum_name(flow_pb2.AuthType, flow.auth_type)
    auth = color.paint(RED if flow.auth_type == flow_pb2.TEST_ALWAYS_FAIL else GREEN, auth)
    return f"{text}; Auth: {auth}"


def join_with_cutoff(elems: list[str], sep: str, target_len: int) -> str:
    """Hubble's joinWithCutOff: at least one element, then " (and N more)"."""
    total = 0
    end = len(elems)
    for i, elem in enumerate(elems):
        total += len(elem) + len(sep)
        if total > target_len and i > 0:
            end = i
            break
    joined = sep.join(elems[:end])
    omitted = len(elems) - end
    return joined if omitted == 0 else f"{joined} (and {omitted} more)"


def go_quote(text: str) -> str:
    """Go's strconv.Quote for printable text (escapes quotes, backslashes, controls)."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
