"""Adds the relay's read APIs to a RelayServer (a start hook, see relay.server):
Hubble's observer.Observer, sensilla.query.v1.Query, their health status, the live
fan-out from the ingest writer, and the source watch."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2

from relay.observer.broadcast import Broadcaster, PublishedBatch
from relay.observer.service import RelayObserver
from relay.observer.state import RelayApi
from relay.store import IngestBatch, WriteResult
from relay.store.flowquery import stored_boot_positions
from sensilla import __version__
from sensilla.protos import observer_pb2_grpc, query_pb2_grpc

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger(__name__)

OBSERVER_SERVICE = "observer.Observer"
QUERY_SERVICE = "sensilla.query.v1.Query"


def publisher(broadcaster: Broadcaster):  # type: ignore[no-untyped-def]
    """The ingest writer's round listener: publish what a round stored."""

    def on_round(batches: list[IngestBatch], result: WriteResult) -> None:
        stored = set(result.stored)
        recovered = set(result.recovered)
        seen: set[tuple[str, int, int]] = set()
        out = []
        for b in batches:
            if b.key not in stored or b.key in seen:
                continue  # duplicates of stored batches were published when stored
            seen.add(b.key)
            out.append(
                PublishedBatch(
                    collector_id=b.collector_id,
                    node_name=b.node_name or b.collector_id,
                    boot_id=b.boot_id,
                    first_seq=b.first_seq,
                    last_seq=b.last_seq,
                    flows=b.flows,
                    lost_events=b.lost_events,
                    recovered=b.key in recovered,
                )
            )
        if out:
            broadcaster.publish(out)

    return on_round


def install(relay: RelayServer) -> None:
    from relay.query.service import QueryService
    from relay.query.source import SourceWatch, parse_source

    assert relay.store is not None and relay.writer is not None and relay.server is not None
    broadcaster = Broadcaster()
    # before the writer starts: every flow stored so far is below the followers' cut
    broadcaster.load_positions(stored_boot_positions(relay.store))
    relay.writer.add_round_listener(publisher(broadcaster))
    source = None
    if relay.config.source:
        source = SourceWatch.from_spec(parse_source(relay.config.source), relay.read_executor)
        log.info("relay: watching source %s", source.describe())
    api = RelayApi(
        relay.store,
        relay.read_executor,
        broadcaster,
        relay.config.limits,
        ingest=relay.ingest,
        source=source,
        version=__version__,
    )
    relay.api = api
    observer_pb2_grpc.add_ObserverServicer_to_server(RelayObserver(api), relay.server)
    query_pb2_grpc.add_QueryServicer_to_server(QueryService(api), relay.server)
    loop = asyncio.get_running_loop()
    api.tasks = [
        loop.create_task(relay.health.set(name, health_pb2.HealthCheckResponse.SERVING))
        for name in (OBSERVER_SERVICE, QUERY_SERVICE)
    ]

    async def stop() -> None:
        for sub in list(broadcaster.subscribers):
            sub.close()  # followers end their streams instead of waiting for the grace
        if source is not None:
            source.close()

    relay.stop_hooks.append(stop)
