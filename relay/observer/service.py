"""Hubble's observer.Observer over every node: history from the store, then the live
tail (grpc.aio).

GetFlows, as Hubble Relay answers it:
- ``since``/``until`` bound flow times (both inclusive); ``number`` N with ``first``
  takes the first N flows from ``since``, without ``first`` the last N before
  ``until``; no ``number`` takes every flow in the window, except with ``follow``
  and no ``since``, which starts at the present (hubble observe -f);
- ``follow`` continues with the live tail: every flow stored after the history's
  cut, each once, in the order batches are stored (per node, the collector's order);
  the tail ends at ``until`` if one is set;
- the whitelist and blacklist are compiled once (sensilla.filters) into the SQL of
  the history and the predicate of the tail, so both select exactly the same flows;
- history is in time order across nodes (ties by collector, boot, sequence);
- a follower that falls behind loses flows from its own queue and is told how many
  with a LostEvent (OBSERVER_EVENTS_QUEUE) where the gap is; collectors' own loss
  reports (LostEvent in their batches) are passed on as they arrive;
- nodes known to be unavailable are announced first with a NodeStatusEvent.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Generator
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import UInt32Value

from relay.observer.broadcast import Lost, Subscription
from relay.observer.limits import (
    RequestError,
    check_field_mask,
    check_filters,
    exhausted,
    invalid,
)
from relay.observer.state import RelayApi
from relay.siem.serve import resumed_flows, wants_resume
from relay.store import StoreError
from relay.store import flowquery as fq
from sensilla.filters import CompiledFilter, FilterError, compile_request_filters
from sensilla.filters.fieldmask import masked_flow
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2
from sensilla.security.scope import current_scope

log = logging.getLogger(__name__)

Response = observer_pb2.GetFlowsResponse
NAMESPACE_WINDOW_S = 3600


def peer_host(peer: str) -> str:
    """The client's host from a gRPC peer string (ipv4:1.2.3.4:5, ipv6:[::1]:5, unix:)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return f"{kind}:{host.strip('[]')}"
    return kind or peer


def _ts(ns: int) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


def flow_response(flow: flow_pb2.Flow, mask: field_mask_pb2.FieldMask | None) -> Response:
    return Response(flow=masked_flow(flow, mask), node_name=flow.node_name, time=flow.time)


def _request_time(request: observer_pb2.GetFlowsRequest, name: str) -> int | None:
    """A request's since/until in ns; INVALID_ARGUMENT when not a valid Timestamp."""
    if not request.HasField(name):
        return None
    try:
        return int(getattr(request, name).ToNanoseconds())
    except ValueError as exc:
        raise invalid(f"{name}: {exc}") from None


class GetFlowsPlan:
    """A validated GetFlows request."""

    def __init__(self, request: observer_pb2.GetFlowsRequest, api: RelayApi) -> None:
        limits = api.limits
        if request.first and request.follow:
            raise invalid("first: cannot be combined with follow")
        check_filters(limits, request.whitelist, request.blacklist)
        self.since = _request_time(request, "since")
        self.until = _request_time(request, "until")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise invalid("since: is after until")
        self.mask: field_mask_pb2.FieldMask | None = None
        if request.HasField("field_mask") and request.field_mask.paths:
            check_field_mask(request.field_mask)
            self.mask = request.field_mask
        if request.HasField("extensions") and (
            request.extensions.type_url or request.extensions.value
        ):
            raise RequestError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"extensions: {request.extensions.type_url or 'this extension'} is not "
                "supported by this relay",
            )
        try:
            self.compiled: CompiledFilter = compile_request_filters(
                request.whitelist, request.blacklist
            )
        except FilterError as exc:
            raise invalid(str(exc)) from None
        self.number = int(request.number)
        self.first = bool(request.first)
        self.follow = bool(request.follow)
        # the caller's namespaces (sensilla.security): ANDed with the filters
        self.scope = current_scope()
        # followers with equal filters and scope share one evaluation per batch
        self.live_key = (
            tuple(f.SerializeToString(deterministic=True) for f in request.whitelist),
            tuple(f.SerializeToString(deterministic=True) for f in request.blacklist),
            self.scope.admin,
            self.scope.namespaces,
        )

    @property
    def wants_history(self) -> bool:
        return not (self.follow and self.number == 0 and self.since is None)

    def selection(self, cut: dict[tuple[str, int], int] | None) -> fq.FlowSelection:
        where, params = self.compiled.sql("native")
        sel = fq.FlowSelection(
            where=where, params=params, since_ns=self.since, until_ns=self.until, upto=cut
        )
        if not self.scope.unrestricted:
            cond, p = self.scope.sql_condition()
            sel.extra.append(cond)
            sel.params.update(p)
        return sel

    def live_filter(self, flow: flow_pb2.Flow) -> bool:
        """The filters and the scope (what followers with the same live_key share)."""
        return self.scope.allows_flow(flow) and self.compiled.matches(flow)


def history_chunks(
    api: RelayApi, plan: GetFlowsPlan, cut: Any
) -> Generator[list[flow_pb2.Flow], None, None]:
    """The history of a GetFlows request (blocking; run it in a store thread)."""
    sel = plan.selection(cut)
    store = api.store
    if plan.number and not plan.first:
        start = fq.nth_newest(store, sel, plan.number)
        chunks = fq.iter_flows(store, sel, start=start, inclusive=True, limit=plan.number)
    else:
        chunks = fq.iter_flows(store, sel, limit=plan.number or None)
    for chunk in chunks:
        yield [flow_pb2.Flow.FromString(blob) for _key, blob in chunk]


class RelayObserver(observer_pb2_grpc.ObserverServicer):
    def __init__(self, api: RelayApi) -> None:
        self.api = api

    # --- GetFlows ------------------------------------------------------------------

    async def GetFlows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        api = self.api
        if wants_resume(request):  # a sensilla.flow.v1.ResumeRequest: relay.siem.serve
            async for resumed in resumed_flows(request, api, context):
                yield resumed
            return
        try:
            plan = GetFlowsPlan(request, api)
            sub = self._subscribe(context) if plan.follow else None
        except RequestError as exc:
            await context.abort(exc.code, exc.message)
            return
        try:
            if sub is not None:
                # tells a client that its follow is in place: everything stored from
                # now on reaches it (a client may wait for the headers before acting)
                await context.send_initial_metadata((("sensilla-follow", "subscribed"),))
            for ev in await self._node_events():
                yield ev
            if plan.wants_history:
                try:
                    async for resp in self._history(plan, sub):
                        yield resp
                except StoreError as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"the relay's store: {exc}")
            if sub is not None:
                async for resp in self._live(plan, sub):
                    yield resp
        finally:
            if sub is not None:
                sub.close()

    def _subscribe(self, context: grpc.aio.ServicerContext[Any, Any]) -> Subscription:
        api, limits = self.api, self.api.limits
        client = peer_host(context.peer() or "")
        b = api.broadcaster
        if b.followers_of(client) >= limits.max_followers_per_client:
            raise exhausted(
                f"follow: this client already has {limits.max_followers_per_client} "
                "concurrent followers (the maximum per client)"
            )
        if len(b.subscribers) >= limits.max_followers:
            raise exhausted(f"follow: the relay serves {limits.max_followers} followers already")
        return b.subscribe(limits.follower_queue_flows, client)

    async def _node_events(self) -> list[Response]:
        try:
            nodes = await self.api.nodes()
        except Exception as exc:  # the store is down: flows may still be served live
            log.warning("node list unavailable: %s", exc)
            return []
        down = [n.name for n in nodes if not n.connected]
        if not down:
            return []
        now = _ts(time.time_ns())
        return [
            Response(
                node_status=relay_pb2.NodeStatusEvent(
                    state_change=relay_pb2.NODE_UNAVAILABLE, node_names=down
                ),
                time=now,
            )
        ]

    async def _history(
        self, plan: GetFlowsPlan, sub: Subscription | None
    ) -> AsyncIterator[Response]:
        gen = history_chunks(self.api, plan, sub.cut if sub is not None else None)
        try:
            while True:
                chunk = await self.api.run(next, gen, None)
                if chunk is None:
                    return
                for flow in chunk:
                    yield flow_response(flow, plan.mask)
        finally:
            # a step still running in a worker thread (the client went away) cannot be
            # closed from here; the generator is dropped and collected instead
            with contextlib.suppress(Exception):
                await self.api.run(gen.close)

    async def _live(self, plan: GetFlowsPlan, sub: Subscription) -> AsyncIterator[Response]:
        until = plan.until
        while True:
            if until is not None:
                left = (until - time.time_ns()) / 1e9
                if left <= 0:
                    return
                try:
                    item = await asyncio.wait_for(sub.get(), left)
                except TimeoutError:
                    return
            else:
                item = await sub.get()
            if item is None:
                return
            if isinstance(item, Lost):
                yield Response(
                    lost_events=flow_pb2.LostEvent(
                        source=flow_pb2.OBSERVER_EVENTS_QUEUE, num_events_lost=item.flows
                    ),
                    time=_ts(time.time_ns()),
                )
                continue
            batch = item.batch
            if item.start == 0:
                now = _ts(time.time_ns())
                for ev in batch.lost_events:
                    yield Response(lost_events=ev, node_name=batch.node_name, time=now)
            cut = sub.cut.get(batch.boot, 0)
            matching = batch.matching(plan.live_key, plan.live_filter)
            lo = bisect.bisect_left(matching, item.start)
            hi = bisect.bisect_left(matching, item.stop)
            for i in matching[lo:hi]:
                if batch.first_seq + i <= cut and not batch.recovered:
                    continue  # stored before the cut: the history had it
                flow = batch.flows[i]
                t = flow.time.ToNanoseconds()
                if until is not None and t > until:
                    return
                if plan.since is not None and t < plan.since:
                    continue
                yield flow_response(flow, plan.mask)
            last = batch.flows[item.stop - 1] if item.stop > item.start else None
            if until is not None and last is not None and last.time.ToNanoseconds() > until:
                return  # the stream has passed until (by flows that did not match too)

    # --- nodes, namespaces, status ---------------------------------------------------

    async def _nodes(self, context: grpc.aio.ServicerContext[Any, Any]) -> list[Any]:
        try:
            return await self.api.nodes()
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the relay's store: {exc}")
            raise  # abort raises; for the type checker

    async def GetNodes(
        self, request: observer_pb2.GetNodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> observer_pb2.GetNodesResponse:
        nodes = await self._nodes(context)
        now = time.time_ns()
        out = observer_pb2.GetNodesResponse()
        for n in nodes:
            out.nodes.add(
                name=n.name,
                version=n.version,
                address=n.address,
                state=relay_pb2.NODE_CONNECTED if n.connected else relay_pb2.NODE_UNAVAILABLE,
                uptime_ns=max(0, now - n.boot_id) if n.connected and n.boot_id else 0,
                num_flows=n.flows_stored,
                max_flows=0,
                seen_flows=n.flows_seen,
            )
        return out

    async def GetNamespaces(
        self,
        request: observer_pb2.GetNamespacesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> observer_pb2.GetNamespacesResponse:
        from relay.store import aggregates as agg

        since = int(time.time()) - NAMESPACE_WINDOW_S
        try:
            names = set(await self.api.run(agg.recent_namespaces, self.api.store, since))
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the relay's store: {exc}")
        if self.api.source is not None:
            try:
                names.update(await self.api.source.namespace_names())
            except Exception as exc:  # the source is not readable: flows still count
                log.warning("source namespaces unavailable: %s", exc)
        scope = current_scope()
        return observer_pb2.GetNamespacesResponse(
            namespaces=[
                observer_pb2.Namespace(namespace=n)
                for n in sorted(names)
                if scope.allows_namespace(n)
            ]
        )

    async def ServerStatus(
        self,
        request: observer_pb2.ServerStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> observer_pb2.ServerStatusResponse:
        api = self.api
        nodes = await self._nodes(context)
        down = [n.name for n in nodes if not n.connected]
        try:
            stored = await api.stored_flows()
        except StoreError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the relay's store: {exc}")
        return observer_pb2.ServerStatusResponse(
            num_flows=stored,
            max_flows=0,
            seen_flows=api.broadcaster.published_flows,
            uptime_ns=api.uptime_ns,
            num_connected_nodes=UInt32Value(value=len(nodes) - len(down)),
            num_unavailable_nodes=UInt32Value(value=len(down)),
            unavailable_nodes=down,
            version=f"sensilla-relay {api.version}".strip(),
            flows_rate=api.broadcaster.flows_rate(),
        )
