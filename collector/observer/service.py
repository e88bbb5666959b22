"""Hubble's observer.Observer over the collector's ring (grpc.aio)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.wrappers_pb2 import UInt32Value

from collector.observer.ring import Event, FlowRing
from sensilla import __version__
from sensilla.filters import CompiledFilter, FilterError, compile_request
from sensilla.filters.fieldmask import unknown_flow_path
from sensilla.protos import observer_pb2, observer_pb2_grpc, relay_pb2
from sensilla.security.scope import current_scope

log = logging.getLogger(__name__)

MAX_FILTERS = 64


def validate_request(request: observer_pb2.GetFlowsRequest) -> CompiledFilter:
    if request.first and request.follow:
        raise FilterError("first", "cannot be combined with follow")
    if len(request.whitelist) + len(request.blacklist) > MAX_FILTERS:
        raise FilterError("whitelist", f"at most {MAX_FILTERS} filters per request")
    for name in ("since", "until"):
        if request.HasField(name):
            try:
                getattr(request, name).ToNanoseconds()
            except ValueError as exc:  # not a valid Timestamp
                raise FilterError(name, str(exc)) from None
    if (
        request.HasField("since")
        and request.HasField("until")
        and request.since.ToNanoseconds() > request.until.ToNanoseconds()
    ):
        raise FilterError("since", "is after until")
    if request.HasField("field_mask"):
        unknown = unknown_flow_path(request.field_mask.paths)
        if unknown is not None:
            i, path = unknown
            raise FilterError(f"field_mask.paths[{i}]", f"unknown flow field path {path!r}")
    return compile_request(request)


def masked(event: Event, mask: field_mask_pb2.FieldMask | None) -> Event:
    if mask is None or not event.HasField("flow"):
        return event
    out = Event(node_name=event.node_name, time=event.time)
    mask.MergeMessage(event.flow, out.flow)
    return out


def in_window(event: Event, since_ns: int | None, until_ns: int | None) -> bool:
    if not event.HasField("flow"):
        return since_ns is None and until_ns is None
    t = event.flow.time.ToNanoseconds()
    return (since_ns is None or t >= since_ns) and (until_ns is None or t <= until_ns)


class LocalObserver(observer_pb2_grpc.ObserverServicer):
    def __init__(
        self,
        ring: FlowRing,
        node_name: str,
        address: str = "",
        follower_queue: int = 4096,
        namespaces: Callable[[], list[str]] | None = None,
    ) -> None:
        self.ring = ring
        self.node_name = node_name
        self.address = address
        self.follower_queue = follower_queue
        self.namespaces = namespaces

    async def GetFlows(
        self, request: observer_pb2.GetFlowsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Event]:
        try:
            compiled = validate_request(request)
        except FilterError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        since = request.since.ToNanoseconds() if request.HasField("since") else None
        until = request.until.ToNanoseconds() if request.HasField("until") else None
        mask = request.field_mask if request.HasField("field_mask") else None
        # a namespace-scoped caller (sensilla.security) sees its namespaces' flows only
        scope = current_scope()
        matches = scope.flow_predicate(compiled.matches) or compiled.matches
        # subscribe before reading history so nothing falls between the two
        follower = self.ring.subscribe(self.follower_queue) if request.follow else None
        try:
            history = [
                e
                for e in list(self.ring.events)
                if in_window(e, since, until) and (not e.HasField("flow") or matches(e.flow))
            ]
            number = request.number
            if number:
                history = history[:number] if request.first else history[-number:]
            elif request.follow and since is None:
                history = []  # hubble observe --follow without --last starts now
            for e in history:
                yield masked(e, mask)
            if follower is None:
                return
            # The follower subscribed in the same loop step as the history snapshot,
            # so its queue holds exactly the events that came after it.
            async for e in follower:
                if e.HasField("flow") and (not matches(e.flow) or not in_window(e, None, until)):
                    continue
                yield masked(e, mask)
        finally:
            if follower is not None:
                self.ring.unsubscribe(follower)

    async def GetNodes(
        self, request: observer_pb2.GetNodesRequest, context: grpc.aio.ServicerContext
    ) -> observer_pb2.GetNodesResponse:
        node = observer_pb2.Node(
            name=self.node_name,
            version=__version__,
            address=self.address,
            state=relay_pb2.NODE_CONNECTED,
            uptime_ns=self.ring.uptime_ns,
            num_flows=self.ring.num_flows,
            max_flows=self.ring.capacity,
            seen_flows=self.ring.seen_flows,
        )
        return observer_pb2.GetNodesResponse(nodes=[node])

    async def GetNamespaces(
        self, request: observer_pb2.GetNamespacesRequest, context: grpc.aio.ServicerContext
    ) -> observer_pb2.GetNamespacesResponse:
        names: set[str] = set()
        cutoff = time.time_ns() - 3600 * 10**9
        for e in self.ring.events:
            if e.HasField("flow") and e.flow.time.ToNanoseconds() >= cutoff:
                names.update(
                    n for n in (e.flow.source.namespace, e.flow.destination.namespace) if n
                )
        if self.namespaces is not None:
            names.update(self.namespaces())
        scope = current_scope()
        return observer_pb2.GetNamespacesResponse(
            namespaces=[
                observer_pb2.Namespace(namespace=n)
                for n in sorted(names)
                if scope.allows_namespace(n)
            ]
        )

    async def ServerStatus(
        self, request: observer_pb2.ServerStatusRequest, context: grpc.aio.ServicerContext
    ) -> observer_pb2.ServerStatusResponse:
        return observer_pb2.ServerStatusResponse(
            num_flows=self.ring.num_flows,
            max_flows=self.ring.capacity,
            seen_flows=self.ring.seen_flows,
            uptime_ns=self.ring.uptime_ns,
            num_connected_nodes=UInt32Value(value=1),
            num_unavailable_nodes=UInt32Value(value=0),
            version=f"sensilla {__version__}",
            flows_rate=self.ring.flows_rate(),
        )
