"""Relay-side exporters: each one a resumable stream (relay.siem.resume) from its
persisted position, through its filters and field mask, into its format and sink.

    manager = ExporterManager(store, executor, load_config("exporters.yaml"))
    manager.start()                 # one task per exporter
    ...
    await manager.stop()

An exporter never loses a flow: its position only moves once the sink holds what
is before it (sinks: relay.siem.sinks). A sink that fails (a syslog receiver down)
holds the exporter back, retrying the same records with capped backoff; the store
keeps the flows meanwhile (within retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.siem import formats
from relay.siem.config import ExporterConfig, ExportersConfig
from relay.siem.position import Positions, advance
from relay.siem.resume import FLOW, Notifier, ResumeStream
from relay.siem.sinks import FileSink, Record, Sink, SinkError, StdoutSink, SyslogSink
from relay.siem.state import StateFile
from relay.store import Store

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger(__name__)


@dataclass
class ExporterStats:
    records: int = 0
    flows: int = 0
    batches: int = 0
    errors: int = 0
    restarts: int = 0
    last_error: str = ""


def make_sink(cfg: ExporterConfig, state_dir: Path) -> Sink:
    fsync = cfg.file.fsync if cfg.file else True
    state = StateFile(state_dir / f"{cfg.name}.state.json", fsync=fsync)
    if cfg.type == "file":
        assert cfg.file is not None
        return FileSink(
            cfg.file.path,
            state,
            max_size=cfg.file.max_size,
            max_backups=cfg.file.max_backups,
            fsync=cfg.file.fsync,
        )
    if cfg.type == "syslog":
        assert cfg.syslog is not None
        s = cfg.syslog
        return SyslogSink(
            s.address,
            state,
            tls=s.tls,
            app_name=s.app_name,
            hostname=s.hostname,
            facility=s.facility,
            msgid=s.msgid,
            sd_id=s.sd_id,
            connect_timeout_s=s.connect_timeout_s,
            confirm_timeout_s=s.confirm_timeout_s,
        )
    return StdoutSink(state)


class Exporter:
    def __init__(
        self,
        cfg: ExporterConfig,
        store: Store,
        read_executor: Executor | None,
        state_dir: Path,
        notifier: Notifier | None = None,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.read_executor = read_executor
        self.notifier = notifier
        self.sink = make_sink(cfg, state_dir)
        # the sink's own thread: writes of one exporter are serialized, and a slow
        # sink never holds up the store readers
        self.sink_executor = ThreadPoolExecutor(1, thread_name_prefix=f"exporter-{cfg.name}")
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.stats = ExporterStats()
        self.position: Positions = {}
        self.task: asyncio.Task[None] | None = None

    async def _sink(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.sink_executor, fn, *args)

    def _records(self, items: list[Any], start: Positions) -> list[Record]:
        out = []
        pos = dict(start)
        mask = self.cfg.mask
        syslog = self.cfg.type == "syslog"
        for item in items:
            if item.kind == FLOW:
                advance(pos, item.key[0], item.key[1], item.seq)
                self.stats.flows += 1
            data = formats.encode(item, self.cfg.format, mask)
            if data is None:
                continue
            meta = formats.syslog_meta(item) if syslog else {}
            out.append(Record(data, dict(pos), meta))
        return out

    async def run(self) -> None:
        """Export until cancelled; a failure restarts from the persisted position."""
        delay = self.retry_initial_s
        while True:
            try:
                await self._run_once()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.stats.restarts += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "exporter %s: %s; restarting from its position in %.1fs",
                    self.cfg.name,
                    self.stats.last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)

    async def _run_once(self) -> None:
        self.position = await self._sink(self.sink.recover)
        log.info(
            "exporter %s (%s, %s): resuming after %d collector boots",
            self.cfg.name,
            self.cfg.type,
            self.cfg.format,
            len(self.position),
        )
        compiled = self.cfg.compiled
        matches = None if compiled is None or compiled.is_trivial else compiled.matches
        if self.cfg.scope is not None:  # the exporter's namespaces (sensilla.security)
            matches = self.cfg.scope.flow_predicate(matches)
        stream = ResumeStream(
            self.store,
            self.read_executor,
            after=dict(self.position),
            matches=matches,
            follow=True,
            notifier=self.notifier,
            poll_s=self.cfg.poll_interval_s,
            fetch_rows=max(self.cfg.batch_size, 1000),
        )
        async for chunk in stream.chunks(max_items=self.cfg.batch_size):
            records = self._records(chunk.items, self.position)
            delay = self.retry_initial_s
            while True:
                try:
                    await self._sink(self.sink.write, records, chunk.position)
                    break
                except SinkError as exc:  # retry the same records
                    self.stats.errors += 1
                    self.stats.last_error = str(exc)
                    log.warning("exporter %s: %s; retrying in %.1fs", self.cfg.name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(self.retry_max_s, delay * 2)
            self.position = dict(chunk.position)
            self.stats.records += len(records)
            self.stats.batches += 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"exporter-{self.cfg.name}"
        )

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        # wait for a write in progress: it completes (and persists) or never started
        await asyncio.get_running_loop().run_in_executor(self.sink_executor, self.sink.close)
        self.sink_executor.shutdown(wait=True)


class ExporterManager:
    def __init__(
        self,
        store: Store,
        read_executor: Executor | None,
        config: ExportersConfig,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.notifier = notifier or Notifier()
        self.exporters = [
            Exporter(cfg, store, read_executor, self.state_dir, self.notifier)
            for cfg in config.exporters
        ]

    def start(self) -> None:
        for e in self.exporters:
            e.start()

    async def stop(self) -> None:
        await asyncio.gather(*(e.stop() for e in self.exporters))


def install(relay: RelayServer, config: ExportersConfig) -> ExporterManager:
    """Start the exporters of a relay (a start hook; relay.store is open)."""
    assert relay.store is not None
    notifier = Notifier()
    writer = relay.writer
    add = getattr(writer, "add_round_listener", None)
    if add is not None:
        add(notifier.notify)  # wakes the exporters when a round is stored
    manager = ExporterManager(relay.store, relay.read_executor, config, notifier)
    manager.start()
    log.info(
        "relay: %d exporters (%s), state in %s",
        len(manager.exporters),
        ", ".join(f"{e.cfg.name}:{e.cfg.type}/{e.cfg.format}" for e in manager.exporters),
        manager.state_dir,
    )
    return manager


def start_hook(config: ExportersConfig) -> Callable[[RelayServer], None]:
    """A RelayServer start hook that runs the exporters and stops them with it."""

    def hook(relay: RelayServer) -> None:
        manager = install(relay, config)
        relay.exporters = manager  # type: ignore[attr-defined]
        relay.stop_hooks.append(manager.stop)

    return hook
