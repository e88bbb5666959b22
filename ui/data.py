"""The UI's only door to the relay.

Every page reads through this module, and this module reads only through the
relay's two gRPC services: Hubble's ``observer.Observer`` (flows, nodes,
namespaces, server status) and Sensilla's ``sensilla.query.v1.Query``
(aggregations computed by the relay in ClickHouse, and Explain). Nothing here
aggregates raw flows: the relay does; this module only reshapes the answers into
small frames and dataclasses the pages draw.

Errors never escape as gRPC exceptions: every failure becomes a
:class:`RelayError` with a ``kind`` the pages turn into a banner.

Configuration comes from the environment (``sensilla ui`` sets it for the
Streamlit process), see :class:`RelayConfig`.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pandas as pd
import streamlit as st
from google.protobuf.timestamp_pb2 import Timestamp

from sensilla.protos import (
    extensions_pb2,  # noqa: F401  (registers FlowExtension for JSON of Flow.extensions)
    flow_pb2,
    observer_pb2,
    observer_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    relay_pb2,
)
from ui.config import DEFAULT_RELAY as DEFAULT_RELAY  # re-exported
from ui.config import RelayConfig as RelayConfig  # re-exported

# How long answers are reused across reruns of the same page (seconds).
TTL_STATUS = 2.0
TTL_LISTS = 15.0
TTL_AGGREGATES = 10.0
TTL_FLOWS = 5.0


def config() -> RelayConfig:
    """The configuration of this UI process."""
    return RelayConfig.from_env()


# --------------------------------------------------------------------------- errors


class RelayError(Exception):
    """A relay call that did not succeed, in words a page can show.

    ``kind`` is one of :data:`RelayError.KINDS`; ``code`` is the gRPC status name
    when there was one; ``method`` the RPC that failed.
    """

    KINDS: ClassVar[tuple[str, ...]] = (
        "unavailable",  # nothing listening, connection refused or reset
        "timeout",  # deadline exceeded
        "unauthenticated",  # missing or wrong token / client certificate
        "forbidden",
        "invalid",  # the relay rejected a value (e.g. a filter)
        "busy",  # resource exhausted: limits reached
        "unimplemented",  # the relay does not serve this API
        "config",  # the UI's own TLS or token files are unusable
        "internal",  # anything else
    )

    _CODES: ClassVar[dict[grpc.StatusCode, str]] = {
        grpc.StatusCode.UNAVAILABLE: "unavailable",
        grpc.StatusCode.CANCELLED: "unavailable",
        grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
        grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
        grpc.StatusCode.PERMISSION_DENIED: "forbidden",
        grpc.StatusCode.INVALID_ARGUMENT: "invalid",
        grpc.StatusCode.OUT_OF_RANGE: "invalid",
        grpc.StatusCode.FAILED_PRECONDITION: "invalid",
        grpc.StatusCode.NOT_FOUND: "invalid",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
        grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
    }

    def __init__(
        self, kind: str, message: str, *, address: str = "", method: str = "", code: str = ""
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown RelayError kind {kind!r}")
        self.kind = kind
        self.message = message
        self.address = address
        self.method = method
        self.code = code
        super().__init__(f"{method or 'relay'}: {kind}: {message}")

    @classmethod
    def from_rpc(cls, err: grpc.RpcError, *, address: str, method: str) -> RelayError:
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else "") or ""
        kind = cls._CODES.get(code, "internal") if code is not None else "internal"
        return cls(
            kind,
            details.strip() or (code.name if code is not None else str(err)),
            address=address,
            method=method,
            code=code.name if code is not None else "",
        )

    @property
    def title(self) -> str:
        """A one-line headline for the banner."""
        where = f" at {self.address}" if self.address else ""
        return {
            "unavailable": f"Relay unavailable: cannot reach the relay{where}",
            "timeout": f"Relay timeout: the relay{where} did not answer in time",
            "unauthenticated": f"Relay refused the credentials{where}",
            "forbidden": f"Relay denied access{where}",
            "invalid": "The relay rejected the request",
            "busy": f"Relay busy: a limit was reached{where}",
            "unimplemented": f"The relay{where} does not serve this API",
            "config": "The UI's relay connection settings are unusable",
            "internal": f"Relay error{where}",
        }[self.kind]

    @property
    def hint(self) -> str:
        """What the user can do about it."""
        return {
            "unavailable": "Is `sensilla relay` running? Start it, or point the UI at "
            "another relay with `sensilla ui --relay HOST:PORT`.",
            "timeout": "The relay may be overloaded; try a shorter time window.",
            "unauthenticated": "Check `--token-file` and the client certificate "
            "(`--tls-cert`, `--tls-key`).",
            "forbidden": "The token or certificate is valid but not allowed to read.",
            "invalid": "Change the values named in the message.",
            "busy": "Narrow the query or retry in a moment.",
            "unimplemented": "Upgrade the relay: this page needs an API it does not serve.",
            "config": "Check the paths given to `--tls-ca`, `--tls-cert`, `--tls-key` "
            "and `--token-file`.",
            "internal": "The relay's log may say more.",
        }[self.kind]


# --------------------------------------------------------------------------- time


@dataclass(frozen=True)
class TimeRange:
    """A closed time window in UTC."""

    since: datetime
    until: datetime

    @classmethod
    def last(
        cls, seconds: float, *, now: datetime | None = None, quantum: float = 5.0
    ) -> TimeRange:
        """The last ``seconds`` up to now, with now rounded down to ``quantum``
        seconds so that reruns within a few seconds reuse cached answers."""
        now = now or datetime.now(UTC)
        if quantum > 0:
            epoch = now.timestamp()
            now = datetime.fromtimestamp(epoch - (epoch % quantum), UTC)
        return cls(now - timedelta(seconds=seconds), now)

    @property
    def seconds(self) -> float:
        return (self.until - self.since).total_seconds()

    def to_proto(self) -> query_pb2.TimeWindow:
        return query_pb2.TimeWindow(since=to_timestamp(self.since), until=to_timestamp(self.until))


def default_step(window: TimeRange, buckets: int = 60) -> int:
    """A round bucket size giving about ``buckets`` buckets over the window."""
    raw = max(1.0, window.seconds / buckets)
    for step in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                 86400):
        if step >= raw:
            return step
    return 86400


def to_timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


# --------------------------------------------------------------------------- names


def verdict_name(value: int) -> str:
    try:
        return flow_pb2.Verdict.Name(value)
    except ValueError:
        return f"VERDICT_{value}"


def drop_reason_name(value: int) -> str:
    if value == 0:
        return ""
    try:
        return flow_pb2.DropReason.Name(value)
    except ValueError:
        return f"DROP_REASON_{value}"


def node_state_name(value: int) -> str:
    names = {
        relay_pb2.NODE_CONNECTED: "connected",
        relay_pb2.NODE_UNAVAILABLE: "unavailable",
        relay_pb2.NODE_GONE: "gone",
        relay_pb2.NODE_ERROR: "error",
    }
    return names.get(value, "unknown")  # type: ignore[call-overload]


# --------------------------------------------------------------------------- results


NODE_COLUMNS = ["name", "state", "address", "version", "last_seen", "flows_stored",
                "flows_seen", "lost_events"]


@dataclass(frozen=True)
class RelayStatus:
    num_flows: int
    max_flows: int
    seen_flows: int
    uptime_s: float
    connected_nodes: int | None
    unavailable_nodes: int | None
    unavailable: tuple[str, ...]
    version: str
    flows_rate: float


@dataclass(frozen=True)
class Rates:
    """Flows per time bucket and verdict: columns time, verdict, flows, per_second."""

    step_seconds: int
    frame: pd.DataFrame


@dataclass(frozen=True)
class ServiceMap:
    """``workloads``: id, namespace, name, kind, identity.
    ``edges``: source_id, destination_id, protocol, port, verdict, flows, packets,
    bytes, drop_reasons (a comma-separated string)."""

    workloads: pd.DataFrame
    edges: pd.DataFrame
    truncated: bool


@dataclass(frozen=True)
class DropSummary:
    """``reasons``: time, reason, drops (per bucket of ``step_seconds``).
    ``top_pairs`` and ``new_drops``: source, destination (workload ids),
    source_namespace, destination_namespace, protocol, port, reason, drops, policies,
    default_deny, denied_by, first_seen, last_seen."""

    reasons: pd.DataFrame
    top_pairs: pd.DataFrame
    new_drops: pd.DataFrame
    step_seconds: int = 0


@dataclass(frozen=True)
class FlowPage:
    flows: tuple[flow_pb2.Flow, ...]
    next_page_token: str = ""


@dataclass(frozen=True)
class Endpoint:
    namespace: str
    name: str
    node: str
    ips: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]
    identity: int
    ports: tuple[tuple[str, int, str], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DirectionAnswer:
    """One side of an Explain answer (egress at the source, ingress at the
    destination). ``reason`` is the policy model's: not-a-pod, own-node,
    not-isolated, allowed, default-deny (empty from relays that do not say)."""

    enforced: bool
    allowed: bool
    selected_by: tuple[str, ...]
    allowed_by: tuple[str, ...]
    reason: str = ""
    pod: str = ""
    audit: bool = False


@dataclass(frozen=True)
class Explanation:
    source: str
    destination: str
    port: int
    protocol: str
    allowed: bool
    audit: bool
    egress: DirectionAnswer
    ingress: DirectionAnswer
    explanation: str
    suggested_policy: str
    last_observed: flow_pb2.Flow | None = None
    forwarded: bool = False  # packets pass: allowed, or denied in audit mode


@dataclass
class _Stubs:
    channel: grpc.Channel
    observer: observer_pb2_grpc.ObserverStub
    query: query_pb2_grpc.QueryStub
    lock: threading.Lock = field(default_factory=threading.Lock)


# --------------------------------------------------------------------------- client


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RelayError("config", f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def make_channel(cfg: RelayConfig) -> grpc.Channel:
    """A channel to the relay, plain or TLS as configured."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # Fail fast when the relay is down instead of backing off for minutes.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if not cfg.tls:
        return grpc.insecure_channel(cfg.address, options=options)
    root = _read_file(cfg.tls_ca, "TLS CA bundle") if cfg.tls_ca else None
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise RelayError("config", "a client certificate needs both --tls-cert and --tls-key")
    chain = _read_file(cfg.tls_cert, "TLS client certificate") if cfg.tls_cert else None
    key = _read_file(cfg.tls_key, "TLS client key") if cfg.tls_key else None
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                         certificate_chain=chain)
    if cfg.tls_server_name:
        options.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
    return grpc.secure_channel(cfg.address, creds, options=options)


def _tls_signature(cfg: RelayConfig) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in (cfg.tls_ca, cfg.tls_cert, cfg.tls_key):
        if path:
            try:
                st_ = os.stat(path)
                out.append((path, st_.st_mtime_ns, st_.st_size, st_.st_ino))
            except OSError:
                out.append((path, None))
    return tuple(out)


class RelayClient:
    """Blocking calls to the relay; every failure is a :class:`RelayError`.

    Independent of Streamlit (the module-level functions below add caching)."""

    def __init__(self, cfg: RelayConfig) -> None:
        self.config = cfg
        self._tls_files = _tls_signature(cfg)
        self._current = self._connect()

    def _connect(self) -> _Stubs:
        channel = make_channel(self.config)
        return _Stubs(
            channel=channel,
            observer=observer_pb2_grpc.ObserverStub(channel),
            query=query_pb2_grpc.QueryStub(channel),
        )

    @property
    def _stubs(self) -> _Stubs:
        """The channel's stubs; a new channel once the TLS files changed (a rotated
        client certificate or CA is used without restarting the UI)."""
        sig = _tls_signature(self.config)
        if sig != self._tls_files:
            self._current, self._tls_files = self._connect(), sig  # the old one is collected
        return self._current

    def close(self) -> None:
        self._current.channel.close()

    # -- plumbing

    def _metadata(self) -> list[tuple[str, str]]:
        if not self.config.token_file:
            return []
        token = _read_file(self.config.token_file, "token file").decode("utf-8", "replace")
        token = token.strip()
        if not token:
            raise RelayError("config", f"token file {self.config.token_file} is empty")
        return [("authorization", f"Bearer {token}")]

    def _unary(self, method: str, call: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return call(request, timeout=timeout or self.config.timeout,
                        metadata=self._metadata())
        except grpc.RpcError as err:
            raise RelayError.from_rpc(err, address=self.config.address, method=method) from None

    # -- observer.Observer

    def server_status(self) -> RelayStatus:
        resp = self._unary("ServerStatus", self._stubs.observer.ServerStatus,
                           observer_pb2.ServerStatusRequest())
        return RelayStatus(
            num_flows=resp.num_flows,
            max_flows=resp.max_flows,
            seen_flows=resp.seen_flows,
            uptime_s=resp.uptime_ns / 1e9,
            connected_nodes=(resp.num_connected_nodes.value
                             if resp.HasField("num_connected_nodes") else None),
            unavailable_nodes=(resp.num_unavailable_nodes.value
                               if resp.HasField("num_unavailable_nodes") else None),
            unavailable=tuple(resp.unavailable_nodes),
            version=resp.version,
            flows_rate=resp.flows_rate,
        )

    def nodes(self) -> pd.DataFrame:
        """The nodes with their state: from Query.Nodes (which adds last seen and
        losses), else from Hubble's GetNodes on a relay without it."""
        try:
            resp = self._unary("Nodes", self._stubs.query.Nodes, query_pb2.NodesRequest())
        except RelayError as err:
            if err.kind != "unimplemented":
                raise
        else:
            return pd.DataFrame(
                [
                    {
                        "name": n.name,
                        "state": node_state_name(n.state),
                        "address": n.address,
                        "version": n.version,
                        "last_seen": from_timestamp(n.last_seen),
                        "flows_stored": n.flows_stored,
                        "flows_seen": n.flows_seen,
                        "lost_events": n.lost_events,
                    }
                    for n in resp.nodes
                ],
                columns=NODE_COLUMNS,
            )
        old = self._unary("GetNodes", self._stubs.observer.GetNodes,
                          observer_pb2.GetNodesRequest())
        return pd.DataFrame(
            [
                {
                    "name": n.name,
                    "state": node_state_name(n.state),
                    "address": n.address,
                    "version": n.version,
                    "last_seen": None,
                    "flows_stored": n.num_flows,
                    "flows_seen": n.seen_flows,
                    "lost_events": None,
                }
                for n in old.nodes
            ],
            columns=NODE_COLUMNS,
        )

    def namespaces(self) -> list[str]:
        resp = self._unary("GetNamespaces", self._stubs.observer.GetNamespaces,
                           observer_pb2.GetNamespacesRequest())
        return sorted({ns.namespace for ns in resp.namespaces if ns.namespace})

    def get_flows(
        self,
        *,
        whitelist: Sequence[flow_pb2.FlowFilter] = (),
        blacklist: Sequence[flow_pb2.FlowFilter] = (),
        number: int = 100,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[flow_pb2.Flow]:
        """The last ``number`` flows (not following), newest last, as the
        Observer returns them."""
        req = observer_pb2.GetFlowsRequest(number=number, whitelist=list(whitelist),
                                           blacklist=list(blacklist))
        if since is not None:
            req.since.CopyFrom(to_timestamp(since))
        if until is not None:
            req.until.CopyFrom(to_timestamp(until))
        flows: list[flow_pb2.Flow] = []
        try:
            stream = self._stubs.observer.GetFlows(req, timeout=self.config.timeout,
                                                   metadata=self._metadata())
            for resp in stream:
                if resp.HasField("flow"):
                    flows.append(resp.flow)
                    if len(flows) >= number > 0:
                        stream.cancel()
                        break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED or len(flows) < number:
                raise RelayError.from_rpc(err, address=self.config.address,
                                          method="GetFlows") from None
        return flows

    # -- sensilla.query.v1.Query

    def flow_rates(
        self, window: TimeRange, namespaces: Sequence[str] = (), step_seconds: int = 0
    ) -> Rates:
        resp = self._unary(
            "FlowRates",
            self._stubs.query.FlowRates,
            query_pb2.FlowRatesRequest(window=window.to_proto(), namespaces=list(namespaces),
                                       step_seconds=step_seconds),
        )
        step = resp.step_seconds or step_seconds or 60
        rows = [
            {
                "time": from_timestamp(p.time),
                "verdict": verdict_name(p.verdict),
                "flows": p.flows,
                "per_second": p.flows / step,
            }
            for p in resp.points
        ]
        return Rates(step, pd.DataFrame(rows, columns=["time", "verdict", "flows", "per_second"]))

    def service_map(
        self,
        window: TimeRange,
        namespaces: Sequence[str] = (),
        *,
        hide_dns: bool = False,
        hide_host: bool = False,
        hide_monitoring: bool = False,
        hide_world: bool = False,
        max_edges: int = 0,
    ) -> ServiceMap:
        resp = self._unary(
            "ServiceMap",
            self._stubs.query.ServiceMap,
            query_pb2.ServiceMapRequest(
                window=window.to_proto(),
                namespaces=list(namespaces),
                hide_dns=hide_dns,
                hide_host=hide_host,
                hide_monitoring=hide_monitoring,
                hide_world=hide_world,
                max_edges=max_edges,
            ),
        )
        return service_map_from_proto(resp)

    def drop_summary(
        self,
        window: TimeRange,
        namespaces: Sequence[str] = (),
        step_seconds: int = 0,
        limit: int = 0,
    ) -> DropSummary:
        resp = self._unary(
            "DropSummary",
            self._stubs.query.DropSummary,
            query_pb2.DropSummaryRequest(window=window.to_proto(), namespaces=list(namespaces),
                                         step_seconds=step_seconds, limit=limit),
        )
        reasons = pd.DataFrame(
            [
                {"time": from_timestamp(p.time), "reason": drop_reason_name(p.reason)
                 or "DROP_REASON_UNKNOWN", "drops": p.drops}
                for p in resp.reasons
            ],
            columns=["time", "reason", "drops"],
        )
        return DropSummary(reasons, _pairs_frame(resp.top_pairs), _pairs_frame(resp.new_drops),
                           resp.step_seconds or step_seconds)

    def search_flows(
        self,
        window: TimeRange,
        *,
        whitelist: Sequence[flow_pb2.FlowFilter] = (),
        blacklist: Sequence[flow_pb2.FlowFilter] = (),
        page_size: int = 100,
        page_token: str = "",
        source_workload_id: str = "",
        destination_workload_id: str = "",
    ) -> FlowPage:
        resp = self._unary(
            "SearchFlows",
            self._stubs.query.SearchFlows,
            query_pb2.SearchFlowsRequest(
                window=window.to_proto(),
                whitelist=list(whitelist),
                blacklist=list(blacklist),
                page_size=page_size,
                page_token=page_token,
                source_workload_id=source_workload_id,
                destination_workload_id=destination_workload_id,
            ),
        )
        return FlowPage(tuple(resp.flows), resp.next_page_token)

    def endpoints(self, namespaces: Sequence[str] = ()) -> list[Endpoint]:
        resp = self._unary("ListEndpoints", self._stubs.query.ListEndpoints,
                           query_pb2.ListEndpointsRequest(namespaces=list(namespaces)))
        out = [
            Endpoint(
                namespace=e.namespace,
                name=e.name,
                node=e.node,
                ips=tuple(e.ips),
                labels=tuple(sorted(e.labels.items())),
                identity=e.identity,
                ports=tuple((p.name, p.port, p.protocol) for p in e.ports),
            )
            for e in resp.endpoints
        ]
        return sorted(out, key=lambda e: (e.namespace, e.name))

    def explain(self, source: str, destination: str, port: int, protocol: str) -> Explanation:
        resp = self._unary(
            "Explain",
            self._stubs.query.Explain,
            query_pb2.ExplainRequest(source=source, destination=destination, port=port,
                                     protocol=protocol),
        )
        return Explanation(
            source=source,
            destination=destination,
            port=port,
            protocol=protocol,
            allowed=resp.allowed,
            audit=resp.audit,
            egress=_direction(resp.egress),
            ingress=_direction(resp.ingress),
            explanation=resp.explanation,
            suggested_policy=resp.suggested_policy,
            last_observed=resp.last_observed if resp.HasField("last_observed") else None,
            # relays before ExplainResponse.forwarded: allowed, or denied in audit mode
            forwarded=resp.forwarded or resp.allowed or resp.audit,
        )


def service_map_from_proto(resp: query_pb2.ServiceMapResponse) -> ServiceMap:
    """The relay's ServiceMap answer as two small frames."""
    workloads = pd.DataFrame(
        [
            {"id": w.id, "namespace": w.namespace, "name": w.name, "kind": w.kind,
             "identity": w.identity}
            for w in resp.workloads
        ],
        columns=["id", "namespace", "name", "kind", "identity"],
    )
    edges = pd.DataFrame(
        [
            {
                "source_id": e.source_id,
                "destination_id": e.destination_id,
                "protocol": e.protocol.upper(),
                "port": e.port,
                "verdict": verdict_name(e.verdict),
                "flows": e.flows,
                "packets": e.packets,
                "bytes": e.bytes,
                "drop_reasons": ", ".join(drop_reason_name(r) for r in e.drop_reasons),
            }
            for e in resp.edges
        ],
        columns=["source_id", "destination_id", "protocol", "port", "verdict", "flows",
                 "packets", "bytes", "drop_reasons"],
    )
    return ServiceMap(workloads, edges, resp.truncated)


def _policy_ref(ref: query_pb2.PolicyRef) -> str:
    name = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
    details = [ref.rule] if ref.rule else []
    details += [f"peer: {ref.peer}"] if ref.peer else []
    details += [f"port: {ref.port}"] if ref.port else []
    return f"{name} ({'; '.join(details)})" if details else name


def _direction(d: query_pb2.DirectionVerdict) -> DirectionAnswer:
    return DirectionAnswer(
        enforced=d.enforced,
        allowed=d.allowed,
        selected_by=tuple(_policy_ref(r) for r in d.selected_by),
        allowed_by=tuple(_policy_ref(r) for r in d.allowed_by),
        reason=d.reason,
        pod=d.pod,
        audit=d.audit,
    )


def workload_label(w: query_pb2.Workload) -> str:
    if w.id.startswith("reserved:"):
        return w.id
    if w.namespace and w.name:
        return f"{w.namespace}/{w.name}"
    return w.id or w.name or "?"


PAIR_COLUMNS = ["source", "destination", "source_namespace", "destination_namespace",
                "protocol", "port", "reason", "drops", "policies", "default_deny", "denied_by",
                "first_seen", "last_seen"]


def denied_by_text(policies: Iterable[str], default_deny: bool, reason: str) -> str:
    """Who denied a dropped pair, in words."""
    names = ", ".join(policies)
    if default_deny:
        return f"default deny (selected by {names})" if names else "default deny"
    if names:
        return f"policy {names}"
    if reason == "POLICY_DENIED":
        return "policy (unattributed)"
    return "not a policy drop"


def _pairs_frame(pairs: Iterable[query_pb2.DroppedPair]) -> pd.DataFrame:
    rows = []
    for p in pairs:
        reason = drop_reason_name(p.reason) or "DROP_REASON_UNKNOWN"
        rows.append(
            {
                "source": workload_label(p.source),
                "destination": workload_label(p.destination),
                "source_namespace": p.source.namespace,
                "destination_namespace": p.destination.namespace,
                "protocol": p.protocol.upper(),
                "port": p.port,
                "reason": reason,
                "drops": p.drops,
                "policies": ", ".join(p.policies),
                "default_deny": p.default_deny,
                "denied_by": denied_by_text(p.policies, p.default_deny, reason),
                "first_seen": from_timestamp(p.first_seen),
                "last_seen": from_timestamp(p.last_seen),
            }
        )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def flows_to_json_lines(flows: Iterable[flow_pb2.Flow]) -> str:
    """Flows exactly as ``sensilla observe -o json`` prints them (Hubble's format:
    one ``{"flow": …, "node_name": …, "time": …}`` object per line)."""
    from sensilla.output import PrinterOptions, make_printer

    out, err = io.StringIO(), io.StringIO()
    printer = make_printer("json", PrinterOptions(out=out, err=err, color="never"))
    for f in flows:
        resp = observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name)
        if f.HasField("time"):
            resp.time.CopyFrom(f.time)
        printer.write(resp)
    printer.close()
    return out.getvalue()


# --------------------------------------------------------------------------- cached API
#
# What the pages call. Each function resolves the configuration from the
# environment (unless given), reuses one channel per configuration, and caches
# answers briefly so that widget interactions do not re-query the relay. Failures
# raise RelayError and are never cached.


@st.cache_resource(show_spinner=False)
def _client(cfg: RelayConfig) -> RelayClient:
    return RelayClient(cfg)


def client(cfg: RelayConfig | None = None) -> RelayClient:
    """The shared client for a configuration (one channel per configuration)."""
    return _client(cfg or config())


def _filters_key(filters: Sequence[flow_pb2.FlowFilter]) -> tuple[bytes, ...]:
    return tuple(f.SerializeToString(deterministic=True) for f in filters)


def _filters_from_key(key: tuple[bytes, ...]) -> list[flow_pb2.FlowFilter]:
    return [flow_pb2.FlowFilter.FromString(b) for b in key]


@st.cache_data(ttl=TTL_STATUS, show_spinner=False)
def _status(cfg: RelayConfig) -> RelayStatus:
    return client(cfg).server_status()


def status(cfg: RelayConfig | None = None) -> RelayStatus:
    return _status(cfg or config())


@st.cache_data(ttl=TTL_STATUS, show_spinner=False)
def _nodes(cfg: RelayConfig) -> pd.DataFrame:
    return client(cfg).nodes()


def nodes(cfg: RelayConfig | None = None) -> pd.DataFrame:
    return _nodes(cfg or config())


@st.cache_data(ttl=TTL_LISTS, show_spinner=False)
def _namespaces(cfg: RelayConfig) -> list[str]:
    return client(cfg).namespaces()


def namespaces(cfg: RelayConfig | None = None) -> list[str]:
    return _namespaces(cfg or config())


@st.cache_data(ttl=TTL_AGGREGATES, show_spinner=False)
def _flow_rates(cfg: RelayConfig, window: TimeRange, ns: tuple[str, ...], step: int) -> Rates:
    return client(cfg).flow_rates(window, ns, step)


def flow_rates(window: TimeRange, namespaces: Sequence[str] = (), step_seconds: int = 0,
               cfg: RelayConfig | None = None) -> Rates:
    return _flow_rates(cfg or config(), window, tuple(namespaces), step_seconds)


@st.cache_data(ttl=TTL_AGGREGATES, show_spinner=False)
def _service_map(cfg: RelayConfig, window: TimeRange, ns: tuple[str, ...],
                 hides: tuple[bool, bool, bool, bool], max_edges: int) -> ServiceMap:
    return client(cfg).service_map(window, ns, hide_dns=hides[0], hide_host=hides[1],
                                   hide_monitoring=hides[2], hide_world=hides[3],
                                   max_edges=max_edges)


def service_map(window: TimeRange, namespaces: Sequence[str] = (), *, hide_dns: bool = False,
                hide_host: bool = False, hide_monitoring: bool = False,
                hide_world: bool = False, max_edges: int = 0,
                cfg: RelayConfig | None = None) -> ServiceMap:
    return _service_map(cfg or config(), window, tuple(namespaces),
                        (hide_dns, hide_host, hide_monitoring, hide_world), max_edges)


@st.cache_data(ttl=TTL_AGGREGATES, show_spinner=False)
def _drop_summary(cfg: RelayConfig, window: TimeRange, ns: tuple[str, ...], step: int,
                  limit: int) -> DropSummary:
    return client(cfg).drop_summary(window, ns, step, limit)


def drop_summary(window: TimeRange, namespaces: Sequence[str] = (), step_seconds: int = 0,
                 limit: int = 0, cfg: RelayConfig | None = None) -> DropSummary:
    return _drop_summary(cfg or config(), window, tuple(namespaces), step_seconds, limit)


@st.cache_data(ttl=TTL_FLOWS, show_spinner=False)
def _search_flows(cfg: RelayConfig, window: TimeRange, wl: tuple[bytes, ...],
                  bl: tuple[bytes, ...], page_size: int, page_token: str, src_id: str,
                  dst_id: str) -> FlowPage:
    return client(cfg).search_flows(
        window, whitelist=_filters_from_key(wl), blacklist=_filters_from_key(bl),
        page_size=page_size, page_token=page_token, source_workload_id=src_id,
        destination_workload_id=dst_id)


def search_flows(window: TimeRange, *, whitelist: Sequence[flow_pb2.FlowFilter] = (),
                 blacklist: Sequence[flow_pb2.FlowFilter] = (), page_size: int = 100,
                 page_token: str = "", source_workload_id: str = "",
                 destination_workload_id: str = "",
                 cfg: RelayConfig | None = None) -> FlowPage:
    return _search_flows(cfg or config(), window, _filters_key(whitelist),
                         _filters_key(blacklist), page_size, page_token, source_workload_id,
                         destination_workload_id)


def latest_flows(*, whitelist: Sequence[flow_pb2.FlowFilter] = (),
                 blacklist: Sequence[flow_pb2.FlowFilter] = (), number: int = 100,
                 since: datetime | None = None,
                 cfg: RelayConfig | None = None) -> list[flow_pb2.Flow]:
    """The newest flows from the Observer (live mode; never cached)."""
    return client(cfg).get_flows(whitelist=whitelist, blacklist=blacklist, number=number,
                                 since=since)


@st.cache_data(ttl=TTL_LISTS, show_spinner=False)
def _endpoints(cfg: RelayConfig, ns: tuple[str, ...]) -> list[Endpoint]:
    return client(cfg).endpoints(ns)


def endpoints(namespaces: Sequence[str] = (), cfg: RelayConfig | None = None) -> list[Endpoint]:
    return _endpoints(cfg or config(), tuple(namespaces))


@st.cache_data(ttl=TTL_FLOWS, show_spinner=False)
def _explain(cfg: RelayConfig, source: str, destination: str, port: int,
             protocol: str) -> Explanation:
    return client(cfg).explain(source, destination, port, protocol)


def explain(source: str, destination: str, port: int, protocol: str = "TCP",
            cfg: RelayConfig | None = None) -> Explanation:
    return _explain(cfg or config(), source, destination, port, protocol)
