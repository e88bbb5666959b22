"""sensilla.query.v1.Query: what the UI asks the relay (grpc.aio).

- ServiceMap, FlowRates, DropSummary aggregate in ClickHouse from the rollups
  (relay.store.aggregates); only the few top dropped pairs read raw flows for their
  policies and exact times.
- SearchFlows pages through raw flows newest first with Hubble filters (the same
  compiled filter as GetFlows) and workload ids grouped exactly as the service map
  groups them; page tokens pin the window (relay.query.tokens).
- ListEndpoints and Explain read the relay's own watch of the source
  (relay.query.source) through the one policy model (collector.policy), plus the
  last observed flow for the pair from the store.
- Nodes: the node list with what Hubble's Node lacks (last seen, losses).

Time windows: ``until`` unset = now, ``since`` unset = one hour before until.
Aggregates cover the rollup buckets that start in [since, until) (minutes for
windows up to a day, hours beyond).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from collector.policy.cluster import Pod
from collector.policy.errors import PolicyValidationError
from relay.observer.limits import RequestError, check_filters, check_namespaces, check_text, invalid
from relay.observer.state import NodeInfo, RelayApi
from relay.query import tokens
from relay.query.explain import ExplainError, explain_request
from relay.store import StoreError, StoreUnavailable
from relay.store import aggregates as agg
from relay.store import flowquery as fq
from relay.store.params import ParamError
from relay.store.rows import flow_extension
from sensilla.filters import FilterError, compile_request_filters
from sensilla.protos import flow_pb2, query_pb2, query_pb2_grpc, relay_pb2
from sensilla.security.scope import current_scope

log = logging.getLogger(__name__)

HOUR_NS = 3600 * 10**9
RAW_RATES_MAX_S = 3 * 3600  # rates with steps under a minute read raw flows up to this
Resp = TypeVar("Resp")


def _ts(ns: int) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


def rpc(
    fn: Callable[[Any, Any, Any], Awaitable[Resp]],
) -> Callable[[Any, Any, Any], Awaitable[Resp]]:
    """Map the relay's errors to gRPC statuses with a message."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> Resp:
        try:
            return await fn(self, request, context)
        except RequestError as exc:
            await context.abort(exc.code, exc.message)
        except (FilterError, ExplainError, tokens.TokenError, ParamError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PolicyValidationError as exc:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"the source holds an invalid policy: {exc}"
            )
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the relay's store: {exc}")
        except StoreError as exc:
            log.warning("%s failed: %s", fn.__name__, exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"the relay's store failed: {exc}")
        raise AssertionError("unreachable")  # abort raises

    return wrapper


def window_ns(w: query_pb2.TimeWindow, now_ns: int | None = None) -> tuple[int, int]:
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        until = w.until.ToNanoseconds() if w.HasField("until") else now_ns
        since = w.since.ToNanoseconds() if w.HasField("since") else until - HOUR_NS
    except ValueError as exc:  # not a valid Timestamp
        raise invalid(f"window: {exc}") from None
    if since > until:
        raise invalid("window.since: is after window.until")
    if since < 0 or until > 2**32 * 10**9:
        raise invalid("window: outside 1970..2106")
    return since, until


def window_s(w: query_pb2.TimeWindow) -> agg.Window:
    since, until = window_ns(w)
    return agg.Window(since // 10**9, -(-until // 10**9))


def choose_step(w: agg.Window, requested: int, limits: Any, *, allow_raw: bool) -> tuple[int, bool]:
    """(step seconds, read raw flows): the request's step when usable, else about 60
    buckets over the window; rollup steps are whole minutes (hours for wide windows)."""
    step = requested or max(10, math.ceil(w.seconds / 60))
    step = max(step, math.ceil(w.seconds / limits.max_points), 1)
    if step < 60 and allow_raw and w.seconds <= RAW_RATES_MAX_S:
        return step, True
    res = 60 if w.resolution() == "minute" else 3600
    return max(res, math.ceil(step / res) * res), False


def scoped_namespaces(limits: Any, field: str, requested: Any) -> list[str] | None:
    """The request's namespaces within the caller's scope (sensilla.security): []
    for every namespace (admin only), None when nothing is visible."""
    return current_scope().restrict(check_namespaces(limits, field, requested))


def workload_proto(d: dict[str, Any]) -> query_pb2.Workload:
    return query_pb2.Workload(
        id=d["id"], namespace=d["namespace"], name=d["name"], kind=d["kind"],
        identity=d["identity"],
    )  # fmt: skip


def _node_proto(n: NodeInfo) -> query_pb2.NodeInfo:
    out = query_pb2.NodeInfo(
        name=n.name,
        collector_id=n.collector_id,
        state=relay_pb2.NODE_CONNECTED if n.connected else relay_pb2.NODE_UNAVAILABLE,
        address=n.address,
        version=n.version,
        boot_id=n.boot_id,
        flows_stored=n.flows_stored,
        flows_seen=n.flows_seen,
        lost_events=n.lost_events,
        in_source=n.in_source,
    )
    if n.last_seen_ns:
        out.last_seen.CopyFrom(_ts(n.last_seen_ns))
    return out


class QueryService(query_pb2_grpc.QueryServicer):
    def __init__(self, api: RelayApi) -> None:
        self.api = api

    @property
    def limits(self) -> Any:
        return self.api.limits

    # --- aggregates ------------------------------------------------------------------

    @rpc
    async def ServiceMap(
        self, request: query_pb2.ServiceMapRequest, context: Any
    ) -> query_pb2.ServiceMapResponse:
        w = window_s(request.window)
        namespaces = scoped_namespaces(self.limits, "namespaces", request.namespaces)
        max_edges = request.max_edges or self.limits.default_edges
        if max_edges > self.limits.max_edges:
            raise invalid(f"max_edges: at most {self.limits.max_edges}")
        if namespaces is None:
            return query_pb2.ServiceMapResponse()
        hides = agg.Hides(
            dns=request.hide_dns,
            host=request.hide_host,
            monitoring=request.hide_monitoring,
            world=request.hide_world,
        )
        edges, truncated = await self.api.run(
            agg.service_map, self.api.store, w, namespaces, hides, max_edges
        )
        resp = query_pb2.ServiceMapResponse(truncated=truncated)
        workloads: dict[str, dict[str, Any]] = {}
        for e in edges:
            resp.edges.add(
                source_id=e.source["id"],
                destination_id=e.destination["id"],
                protocol=e.protocol,
                port=e.port,
                verdict=e.verdict,  # type: ignore[arg-type]
                flows=e.flows,
                packets=e.packets,
                bytes=e.bytes,
                drop_reasons=e.drop_reasons,  # type: ignore[arg-type]
            )
            workloads.setdefault(e.source["id"], e.source)
            workloads.setdefault(e.destination["id"], e.destination)
        for wid in sorted(workloads):
            resp.workloads.append(workload_proto(workloads[wid]))
        return resp

    @rpc
    async def FlowRates(
        self, request: query_pb2.FlowRatesRequest, context: Any
    ) -> query_pb2.FlowRatesResponse:
        w = window_s(request.window)
        namespaces = scoped_namespaces(self.limits, "namespaces", request.namespaces)
        step, raw = choose_step(w, request.step_seconds, self.limits, allow_raw=True)
        if namespaces is None:
            return query_pb2.FlowRatesResponse(step_seconds=step)
        rows = await self.api.run(
            functools.partial(agg.flow_rates, raw=raw), self.api.store, w, step, namespaces
        )
        resp = query_pb2.FlowRatesResponse(step_seconds=step)
        for t, verdict, flows in rows:
            resp.points.add(time=_ts(t * 10**9), verdict=verdict, flows=flows)  # type: ignore[arg-type]
        return resp

    @rpc
    async def DropSummary(
        self, request: query_pb2.DropSummaryRequest, context: Any
    ) -> query_pb2.DropSummaryResponse:
        w = window_s(request.window)
        namespaces = scoped_namespaces(self.limits, "namespaces", request.namespaces)
        limit = request.limit or self.limits.default_pairs
        if limit > self.limits.max_pairs:
            raise invalid(f"limit: at most {self.limits.max_pairs}")
        step, _ = choose_step(w, request.step_seconds, self.limits, allow_raw=False)
        if namespaces is None:
            return query_pb2.DropSummaryResponse(step_seconds=step)
        store = self.api.store
        recent_from = w.since + (w.until - w.since) * 3 // 4

        def load() -> tuple[Any, Any, Any, Any]:
            reasons = agg.drop_reasons(store, w, step, namespaces)
            top = agg.top_dropped_pairs(store, w, namespaces, limit)
            candidates = agg.new_drop_candidates(store, w, recent_from, namespaces, limit)
            agg.pair_details(store, w, [*top, *candidates])
            fresh = [p for p in candidates if p.first_ns >= recent_from * 10**9]
            fwd = agg.forwarded_first(store, w, [p.base for p in fresh])
            new = [p for p in fresh if p.base in fwd and fwd[p.base] < p.first_ns]
            return reasons, top, new, None

        reasons, top, new, _ = await self.api.run(load)
        resp = query_pb2.DropSummaryResponse(step_seconds=step)
        for t, reason, drops in reasons:
            resp.reasons.add(time=_ts(t * 10**9), reason=reason, drops=drops)  # type: ignore[arg-type]
        for p in top:
            self._pair(resp.top_pairs.add(), p)
        for p in new:
            self._pair(resp.new_drops.add(), p)
        return resp

    @staticmethod
    def _pair(out: query_pb2.DroppedPair, p: agg.DropPairRow) -> None:
        out.source.CopyFrom(workload_proto(p.source))
        out.destination.CopyFrom(workload_proto(p.destination))
        out.protocol = p.protocol
        out.port = p.port
        out.reason = p.reason  # type: ignore[assignment]
        out.drops = p.drops
        out.policies.extend(p.policies)
        default_deny = False
        if p.last_flow:
            flow = flow_pb2.Flow.FromString(p.last_flow)
            ext = flow_extension(flow)
            default_deny = ext is not None and ext.drop_detail == "default-deny"
            if not p.policies:
                out.policies.extend(
                    sorted(
                        {
                            f"{q.namespace}/{q.name}"
                            for q in [*flow.ingress_denied_by, *flow.egress_denied_by]
                        }
                    )
                )
        out.default_deny = default_deny
        out.first_seen.CopyFrom(_ts(p.first_ns or p.first_bucket * 10**9))
        out.last_seen.CopyFrom(_ts(p.last_ns or p.last_bucket * 10**9))

    # --- flows -------------------------------------------------------------------------

    @rpc
    async def SearchFlows(
        self, request: query_pb2.SearchFlowsRequest, context: Any
    ) -> query_pb2.SearchFlowsResponse:
        limits = self.limits
        check_filters(limits, request.whitelist, request.blacklist)
        page_size = request.page_size or limits.default_page_size
        if page_size > limits.max_page_size:
            raise invalid(f"page_size: at most {limits.max_page_size}")
        src_id = check_text(limits, "source_workload_id", request.source_workload_id)
        dst_id = check_text(limits, "destination_workload_id", request.destination_workload_id)
        compiled = compile_request_filters(request.whitelist, request.blacklist)
        digest = tokens.query_digest(request)
        start: tuple[int, str, int, int] | None = None
        if request.page_token:
            tok = tokens.decode(check_text(limits, "page_token", request.page_token))
            if tok.digest != digest:
                raise invalid("page_token: from a different search (filters or workloads)")
            since, until, start = tok.since_ns, tok.until_ns, tok.key
        else:
            since, until = window_ns(request.window)
        where, params = compiled.sql("native")
        sel = fq.FlowSelection(where=where, params=params, since_ns=since, until_ns=until)
        for side, wid, prefix in (("src", src_id, "ws_"), ("dst", dst_id, "wd_")):
            if wid:
                cond, p = agg.workload_id_condition(side, wid, prefix)
                sel.extra.append(cond)
                sel.params.update(p)
        scope = current_scope()
        if not scope.unrestricted:  # only flows from or to the caller's namespaces
            cond, p = scope.sql_condition()
            sel.extra.append(cond)
            sel.params.update(p)
        store = self.api.store

        def load() -> list[tuple[fq.Key, bytes]]:
            out: list[tuple[fq.Key, bytes]] = []
            for chunk in fq.iter_flows(
                store, sel, start=start, descending=True, limit=page_size + 1,
                scan_rows=page_size + 1,
            ):  # fmt: skip
                out.extend(chunk)
            return out

        rows = await self.api.run(load)
        resp = query_pb2.SearchFlowsResponse(
            flows=[flow_pb2.Flow.FromString(blob) for _, blob in rows[:page_size]]
        )
        if len(rows) > page_size:
            resp.next_page_token = tokens.encode(
                tokens.PageToken(since, until, rows[page_size - 1][0], digest)
            )
        return resp

    # --- the source ------------------------------------------------------------------------

    def _source(self) -> Any:
        if self.api.source is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the relay watches no source (start it with --source lab:DIR or kubernetes)",
            )
        return self.api.source

    @rpc
    async def ListEndpoints(
        self, request: query_pb2.ListEndpointsRequest, context: Any
    ) -> query_pb2.ListEndpointsResponse:
        namespaces = set(check_namespaces(self.limits, "namespaces", request.namespaces))
        scope = current_scope()
        view = await self._source().view()
        resp = query_pb2.ListEndpointsResponse()
        for key, pod in sorted(view.state.pods.items()):
            if namespaces and pod.namespace not in namespaces:
                continue
            if not scope.allows_namespace(pod.namespace):
                continue
            ep = resp.endpoints.add(
                namespace=pod.namespace,
                name=pod.name,
                node=pod.node,
                ips=[str(a) for a in pod.ips],
                identity=view.identities.by_pod.get(key, 0),
            )
            ep.labels.update(dict(pod.labels))
            for port in pod.ports:
                ep.ports.add(name=port.name, port=port.port, protocol=port.protocol)
        return resp

    @rpc
    async def Explain(
        self, request: query_pb2.ExplainRequest, context: Any
    ) -> query_pb2.ExplainResponse:
        for field in ("source", "destination", "protocol"):
            check_text(self.limits, field, getattr(request, field))
        scope = current_scope()
        ends = (request.source, request.destination)
        if not scope.unrestricted and all("/" in e for e in ends) and not any(
            scope.allows_namespace(e.split("/", 1)[0]) for e in ends
        ):  # refused before looking pods up: no hint of what other namespaces hold
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED,
                "source, destination: neither is in a namespace this token may see",
            )
        view = await self._source().view()
        resp, src, dst, port, protocol = explain_request(view.state, request)
        if not scope.unrestricted and not any(
            isinstance(e, Pod) and scope.allows_namespace(e.namespace) for e in (src, dst)
        ):
            raise RequestError(
                grpc.StatusCode.PERMISSION_DENIED,
                "source, destination: neither is in a namespace this token may see",
            )

        def ep(e: Any) -> agg.Endpoint:
            return (e.namespace, e.name) if isinstance(e, Pod) else str(e)

        if protocol == "ICMP":
            protos = ["icmpv4"] if (request.family or 4) == 4 else ["icmpv6"]
        else:
            protos = [protocol.lower()]
        try:
            last = await self.api.run(
                agg.last_flow_between, self.api.store, ep(src), ep(dst), port, protos
            )
        except StoreError as exc:  # the model's answer stands without history
            log.warning("Explain: last observed flow unavailable: %s", exc)
            last = None
        if last:
            resp.last_observed.CopyFrom(flow_pb2.Flow.FromString(last))
        return resp

    # --- nodes -----------------------------------------------------------------------------

    @rpc
    async def Nodes(self, request: query_pb2.NodesRequest, context: Any) -> query_pb2.NodesResponse:
        nodes = await self.api.nodes()
        return query_pb2.NodesResponse(
            nodes=[_node_proto(n) for n in nodes], flows_rate=self.api.broadcaster.flows_rate()
        )
