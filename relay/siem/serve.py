"""Resumable GetFlows: what the relay's Observer answers when a GetFlowsRequest
carries a ``sensilla.flow.v1.ResumeRequest`` in ``extensions``.

The client sends ``ResumeRequest.after`` = for each collector boot, the highest
Position it received (empty: from the start of retention); every flow it then gets
carries its own Position in ``Flow.extensions`` (kept even when a field mask leaves
``extensions`` out), so the client keeps its position by taking, per boot, the
highest sequence received, and resumes with it after any disconnect. The stream
holds every later flow exactly once, history first, then live with ``follow``
(relay.siem.resume); the whitelist/blacklist filter it (filtered-out flows simply
never appear), ``since`` bounds the boots the position does not name, ``until``
ends the stream after the history, ``number`` caps the flows sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from relay.siem.position import PositionError, from_proto, resume_request
from relay.siem.resume import FLOW, Notifier, ResumeStream
from sensilla.filters import FilterError, compile_request_filters
from sensilla.filters.fieldmask import unknown_flow_path
from sensilla.protos import flow_pb2, observer_pb2

Response = observer_pb2.GetFlowsResponse


def wants_resume(request: observer_pb2.GetFlowsRequest) -> bool:
    """True when the request carries an extension (a ResumeRequest, or something this
    relay will refuse with a clear error)."""
    return request.HasField("extensions") and bool(
        request.extensions.type_url or request.extensions.value
    )


def _mask(request: observer_pb2.GetFlowsRequest) -> field_mask_pb2.FieldMask | None:
    if not request.HasField("field_mask") or not request.field_mask.paths:
        return None
    paths = list(request.field_mask.paths)
    unknown = unknown_flow_path(paths)
    if unknown is not None:
        i, p = unknown
        raise PositionError(f"field_mask.paths[{i}]: unknown flow field path {p!r}")
    if "extensions" not in paths:
        paths.append("extensions")  # every flow of a resumable stream carries its position
    return field_mask_pb2.FieldMask(paths=paths)


def _client(context: grpc.aio.ServicerContext[Any, Any] | None) -> str:
    """The client's host, as the Observer counts followers per client."""
    if context is None:
        return ""
    from relay.observer.service import peer_host

    return peer_host(context.peer() or "")


async def _wake_on_publish(api: Any, notifier: Notifier, client: str) -> None:
    """Turn the relay's live fan-out into wake-ups (one flow of queue is enough)."""
    broadcaster = getattr(api, "broadcaster", None)
    if broadcaster is None:
        return
    sub = broadcaster.subscribe(1, client)
    try:
        while True:
            item = await sub.get()
            if item is None:
                return
            notifier.notify()
    finally:
        sub.close()


async def resumed_flows(
    request: observer_pb2.GetFlowsRequest,
    api: Any,
    context: grpc.aio.ServicerContext[Any, Any] | None = None,
    *,
    poll_s: float = 1.0,
) -> AsyncIterator[Response]:
    """The responses of a resumable GetFlows (aborts the call on a bad request)."""
    try:
        resume = resume_request(request)
        assert resume is not None
        after = from_proto(resume.after, "extensions.after")
        limits = getattr(api, "limits", None)
        n = len(request.whitelist) + len(request.blacklist)
        if limits is not None and n > limits.max_filters:
            raise PositionError(
                f"whitelist/blacklist: {n} filters; at most {limits.max_filters} per request"
            )
        try:
            compiled = compile_request_filters(request.whitelist, request.blacklist)
        except FilterError as exc:
            raise PositionError(str(exc)) from None
        try:
            since = request.since.ToNanoseconds() if request.HasField("since") else None
            until = request.until.ToNanoseconds() if request.HasField("until") else None
        except ValueError as exc:  # not a valid Timestamp
            raise PositionError(f"since/until: {exc}") from None
        if since is not None and until is not None and since > until:
            raise PositionError("since: is after until")
        mask = _mask(request)
    except PositionError as exc:
        if context is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise
    notifier = Notifier()
    waker: asyncio.Task[None] | None = None
    if request.follow and until is None:
        client = _client(context)
        broadcaster, limits = getattr(api, "broadcaster", None), getattr(api, "limits", None)
        if (
            broadcaster is not None
            and limits is not None
            and broadcaster.followers_of(client) >= limits.max_followers_per_client
        ):
            message = (
                f"follow: this client already has {limits.max_followers_per_client} "
                "concurrent followers (the maximum per client)"
            )
            if context is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            raise PositionError(message)
        waker = asyncio.get_running_loop().create_task(_wake_on_publish(api, notifier, client))
        if context is not None:
            await context.send_initial_metadata((("sensilla-follow", "subscribed"),))
    from sensilla.security.scope import current_scope

    # a namespace-scoped caller (sensilla.security) gets only its namespaces' flows
    scope = current_scope()
    stream = ResumeStream(
        api.store,
        api.executor,
        after=after,
        matches=scope.flow_predicate(None if compiled.is_trivial else compiled.matches),
        since_ns=since,
        until_ns=until,
        follow=request.follow,
        limit=int(request.number),
        notifier=notifier,
        poll_s=poll_s,
    )
    try:
        async for item in stream.items():
            if item.kind == FLOW and item.flow is not None:
                flow = item.flow
                if mask is not None:
                    out = flow_pb2.Flow()
                    mask.MergeMessage(flow, out)
                    flow = out
                resp = Response(flow=flow, node_name=item.node_name)
                resp.time.CopyFrom(item.flow.time)
            else:
                resp = Response(lost_events=item.lost, node_name=item.node_name)
                if item.time_ns:
                    resp.time.FromNanoseconds(item.time_ns)
            yield resp
    finally:
        if waker is not None:
            waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waker
