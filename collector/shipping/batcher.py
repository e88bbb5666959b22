"""Group serialized flows into batches by size and by time, and seal them into the
spool. When the spool is full, flows are dropped *before* they get a batch, counted,
and reported to the relay as a LostEvent in the next batch that fits."""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from collector.shipping import wire
from collector.shipping.spool import Spool, SpoolFull
from sensilla.protos import flow_pb2

log = logging.getLogger(__name__)

_LEDGER = struct.Struct("<QQ")


class BootLedger:
    """Two counters of one collector boot, in a small file next to the spool, so that
    a later boot can report what this one lost if it was killed: flows *handed* to
    the batcher (written before they are handed over) and flows *accounted* for
    (sealed into the spool, or counted in a sealed batch's LostEvent). A SIGKILL
    loses the flows in between (the open batch); the next boot reports them.

    Each update is one 16-byte pwrite (no fsync: it survives the process, not a power
    cut). A failed write (disk full) is retried with the next update."""

    def __init__(self, directory: str | Path, boot_id: int) -> None:
        self.path = Path(directory) / f"boot-{boot_id}.ledger"
        self.handed = 0
        self.accounted = 0
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("boot ledger %s: %s (a crash would lose flows unreported)", self.path, exc)
        self._write()

    def _write(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, _LEDGER.pack(self.handed, self.accounted), 0)

    def hand(self, n: int) -> None:
        self.handed += n
        self._write()

    def account(self, n: int) -> None:
        self.accounted += n
        self._write()

    def close(self, remove: bool = False) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)

    @staticmethod
    def earlier(directory: str | Path, boot_id: int) -> list[tuple[Path, int]]:
        """Ledgers of other boots in `directory`, each with the flows it lost."""
        out = []
        for p in sorted(Path(directory).glob("boot-*.ledger")):
            if p.name == f"boot-{boot_id}.ledger":
                continue
            try:
                handed, accounted = _LEDGER.unpack(p.read_bytes()[: _LEDGER.size])
            except (OSError, struct.error):
                handed = accounted = 0  # created, never written: nothing was handed
            out.append((p, max(0, handed - accounted)))
        return out


class Batcher:
    def __init__(
        self,
        spool: Spool,
        boot_id: int,
        max_flows: int = 2000,
        max_bytes: int = 1 << 20,
        max_delay_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        on_sealed: Callable[[], None] | None = None,
        ledger: BootLedger | None = None,
    ) -> None:
        self.spool = spool
        self.ledger = ledger
        self.boot_id = boot_id
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.on_sealed = on_sealed
        self._lock = threading.Lock()
        self._flows: list[bytes] = []
        self._bytes = 0
        self._opened_at = 0.0
        self._lost: list[flow_pb2.LostEvent] = []
        self._overflow_pending = 0
        self._gap = False  # a flow was dropped after the open batch's flows
        self.next_sequence = 1 + max(
            (b.sequence for b in spool.unacked() if b.boot_id == boot_id), default=0
        )
        # counters (exported as metrics by the agent)
        self.flows_in = 0
        self.flows_dropped = 0
        self.batches_sealed = 0

    def expect(self, n: int) -> None:
        """`n` flows are about to be added: counted in the boot ledger first."""
        if self.ledger is not None:
            with self._lock:
                self.ledger.hand(n)

    def add(self, flow: bytes) -> bool:
        """Queue one serialized flow.Flow; False if it was dropped (spool full)."""
        sealed = False
        with self._lock:
            self.flows_in += 1
            if not self.spool.room_for(self._bytes + len(flow) + 64):
                self.flows_dropped += 1
                self._overflow_pending += 1
                # a batch's flows must have consecutive sequences (the relay rejects
                # anything else): the flows before this gap go in a batch of their own
                self._gap = bool(self._flows)
                return False
            if self._gap:
                sealed = self._seal_locked()
                if not self.spool.room_for(len(flow) + 64):
                    self.flows_dropped += 1
                    self._overflow_pending += 1
                    return self._dropped_after(sealed)
            if not self._flows:
                self._opened_at = self.clock()
            self._flows.append(flow)
            self._bytes += len(flow) + 4
            if len(self._flows) >= self.max_flows or self._bytes >= self.max_bytes:
                sealed = self._seal_locked() or sealed
        if sealed and self.on_sealed is not None:
            self.on_sealed()
        return True

    def _dropped_after(self, sealed: bool) -> bool:
        if sealed and self.on_sealed is not None:
            self.on_sealed()
        return False

    def add_lost(self, event: flow_pb2.LostEvent) -> None:
        """Report a loss upstream with the next batch."""
        with self._lock:
            if not self._flows and not self._lost:
                self._opened_at = self.clock()
            self._lost.append(event)

    def seal_if_due(self) -> bool:
        with self._lock:
            pending = bool(self._flows or self._lost or self._overflow_pending)
            if not pending or self.clock() - self._opened_at < self.max_delay_s:
                return False
            sealed = self._seal_locked()
        if sealed and self.on_sealed is not None:
            self.on_sealed()
        return sealed

    def flush(self) -> bool:
        with self._lock:
            sealed = self._seal_locked() if (self._flows or self._lost) else False
        if sealed and self.on_sealed is not None:
            self.on_sealed()
        return sealed

    def _seal_locked(self) -> bool:
        self._gap = False  # whatever happens, the open batch is empty afterwards
        lost = list(self._lost)
        if self._overflow_pending:
            lost.append(
                flow_pb2.LostEvent(
                    source=flow_pb2.OBSERVER_EVENTS_QUEUE, num_events_lost=self._overflow_pending
                )
            )
        payload = wire.encode_batch(
            self.boot_id, self.next_sequence, self._flows, lost, time.time_ns()
        )
        try:
            self.spool.append(self.boot_id, self.next_sequence, len(self._flows), payload)
        except SpoolFull:
            # the batch no longer fits (another writer, or its own overhead): its flows
            # become losses, reported with the next batch that fits
            self.flows_dropped += len(self._flows)
            self._overflow_pending += len(self._flows)
            self._flows.clear()
            self._bytes = 0
            return False
        self.next_sequence += 1
        self.batches_sealed += 1
        if self.ledger is not None:
            self.ledger.account(len(self._flows) + self._overflow_pending)
        self._flows = []
        self._bytes = 0
        self._lost = []
        self._overflow_pending = 0
        return True
