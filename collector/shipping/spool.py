"""A durable, bounded spool of sealed batches waiting for the relay's ack.

Every sealed batch is appended to a segment file before it is sent, so a relay
outage costs disk, not memory, and a collector restart resends what was never
acknowledged (the relay's HelloAck says what it already has). Recent payloads are
also kept in memory, up to a budget, so resends rarely read the disk.

Record format (little endian): boot_id u64, sequence u64, flows u32, length u32,
crc32 u32, then `length` bytes of an encoded sensilla.ingest.v1.Batch. A torn
record at the end of the last segment (a crash mid-write) is cut off on open.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct("<QQIII")


class SpoolFull(Exception):
    """The spool has no room for another batch."""


@dataclass
class SpooledBatch:
    boot_id: int
    sequence: int
    flows: int
    segment: int
    offset: int
    length: int
    payload: bytes | None  # None: only on disk

    @property
    def key(self) -> tuple[int, int]:
        return (self.boot_id, self.sequence)


class Spool:
    def __init__(
        self,
        directory: str | Path,
        max_bytes: int = 2 << 30,
        memory_bytes: int = 64 << 20,
        segment_bytes: int = 16 << 20,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.memory_budget = memory_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._batches: list[SpooledBatch] = []  # unacked, in (boot, seq) order
        self._segment_sizes: dict[int, int] = {}
        self._live_per_segment: dict[int, int] = {}
        self.memory_bytes = 0
        self._active: int | None = None
        self._active_file: object | None = None
        self._load()

    # --- opening ----------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.dir / f"seg-{segment:010d}.spool"

    def _load(self) -> None:
        segments = sorted(
            int(p.stem.split("-")[1]) for p in self.dir.glob("seg-*.spool") if p.stem[4:].isdigit()
        )
        for seg in segments:
            path = self._path(seg)
            data = path.read_bytes()
            offset = 0
            good = 0
            while offset + _HEADER.size <= len(data):
                boot, seq, flows, length, crc = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                payload = data[start : start + length]
                if len(payload) != length or zlib.crc32(payload) != crc:
                    break
                self._batches.append(SpooledBatch(boot, seq, flows, seg, start, length, None))
                self._live_per_segment[seg] = self._live_per_segment.get(seg, 0) + 1
                offset = start + length
                good = offset
            if good < len(data):
                with open(path, "r+b") as f:
                    f.truncate(good)
            self._segment_sizes[seg] = good
            if not self._live_per_segment.get(seg):
                self._drop_segment(seg)
        self._batches.sort(key=lambda b: b.key)

    # --- accounting -----------------------------------------------------------------
    @property
    def disk_bytes(self) -> int:
        return sum(self._segment_sizes.values())

    def __len__(self) -> int:
        return len(self._batches)

    def room_for(self, nbytes: int) -> bool:
        return self.disk_bytes + _HEADER.size + nbytes <= self.max_bytes

    # --- writing ----------------------------------------------------------------------
    def _roll(self) -> None:
        nxt = max(self._segment_sizes, default=0) + 1
        new = open(self._path(nxt), "ab")  # noqa: SIM115 - kept open
        if self._active_file is not None:
            with contextlib.suppress(OSError):
                self._active_file.close()  # type: ignore[attr-defined]
        self._active = nxt
        self._active_file = new
        self._segment_sizes[nxt] = 0
        self._live_per_segment.setdefault(nxt, 0)

    def _undo_partial_write(self) -> None:
        """After a failed write (disk full, I/O error): cut the active segment back to
        its last whole record and reopen it, so the next append starts clean."""
        f, self._active_file = self._active_file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[attr-defined]  # unwritten bytes are dropped
        seg = self._active
        if seg is None:
            return
        path = self._path(seg)
        try:
            os.truncate(path, self._segment_sizes[seg])
            self._active_file = open(path, "ab")  # noqa: SIM115 - kept open
        except OSError:
            self._active = None  # the next append rolls to a new segment
            if not self._live_per_segment.get(seg):
                self._drop_segment(seg)

    def append(self, boot_id: int, sequence: int, flows: int, payload: bytes) -> SpooledBatch:
        with self._lock:
            if not self.room_for(len(payload)):
                raise SpoolFull(f"spool full ({self.disk_bytes} of {self.max_bytes} bytes)")
            header = _HEADER.pack(boot_id, sequence, flows, len(payload), zlib.crc32(payload))
            try:
                if self._active is None or self._segment_sizes[self._active] >= self.segment_bytes:
                    self._roll()
                assert self._active is not None and self._active_file is not None
                seg = self._active
                f = self._active_file
                f.write(header)  # type: ignore[attr-defined]
                f.write(payload)  # type: ignore[attr-defined]
                f.flush()  # type: ignore[attr-defined]
            except OSError as exc:
                # the disk is full (or failing): the batch is not spooled; the caller
                # counts its flows as lost, like a full spool
                self._undo_partial_write()
                raise SpoolFull(f"spool disk: {exc.strerror or exc}") from exc
            offset = self._segment_sizes[seg] + _HEADER.size
            self._segment_sizes[seg] = offset + len(payload)
            keep = self.memory_bytes + len(payload) <= self.memory_budget
            if keep:
                self.memory_bytes += len(payload)
            batch = SpooledBatch(
                boot_id, sequence, flows, seg, offset, len(payload), payload if keep else None
            )
            self._batches.append(batch)
            self._live_per_segment[seg] = self._live_per_segment.get(seg, 0) + 1
            return batch

    # --- reading ---------------------------------------------------------------------
    def unacked(self) -> list[SpooledBatch]:
        with self._lock:
            return list(self._batches)

    def payload(self, batch: SpooledBatch) -> bytes:
        if batch.payload is not None:
            return batch.payload
        with open(self._path(batch.segment), "rb") as f:
            f.seek(batch.offset)
            data = f.read(batch.length)
        if len(data) != batch.length:
            raise OSError(f"spool segment {batch.segment} is short")
        return data

    # --- acknowledging -----------------------------------------------------------------
    def ack_through(self, boot_id: int, sequence: int) -> int:
        """Release every batch of `boot_id` with a sequence up to `sequence`."""
        with self._lock:
            keep: list[SpooledBatch] = []
            released = 0
            for b in self._batches:
                if b.boot_id == boot_id and b.sequence <= sequence:
                    released += 1
                    if b.payload is not None:
                        self.memory_bytes -= b.length
                    self._live_per_segment[b.segment] -= 1
                    if self._live_per_segment[b.segment] == 0 and b.segment != self._active:
                        self._drop_segment(b.segment)
                else:
                    keep.append(b)
            self._batches = keep
            if (
                self._active is not None
                and self._live_per_segment.get(self._active, 0) == 0
                and self._segment_sizes.get(self._active, 0) > 0
            ):
                # everything in the active segment is acked: start afresh
                if self._active_file is not None:
                    self._active_file.close()  # type: ignore[attr-defined]
                self._active_file = None
                self._drop_segment(self._active)
                self._active = None
            return released

    def _drop_segment(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(seg))
        self._segment_sizes.pop(seg, None)
        self._live_per_segment.pop(seg, None)

    def close(self) -> None:
        with self._lock:
            if self._active_file is not None:
                self._active_file.close()  # type: ignore[attr-defined]
                self._active_file = None
