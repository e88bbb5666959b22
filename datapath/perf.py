"""Reading flow events from the perf event array: our own mmap reader.

One BPF-output perf ring per online CPU, opened with `wakeup_events` (the
kernel wakes the reader once per that many samples) and read on a short drain
timer as well, so a lone event waits at most `drain_interval` seconds. Works on
a pinned perf event array, so a restarted agent reads without recompiling.

A batch is returned as a numpy structured array (layout.EVENT_DTYPE): when the
ring holds only samples of our size (the usual case) it is parsed with one
numpy view, without per-event Python.

Losses: the program counts every failed bpf_perf_event_output() per CPU and
errno (no ring installed for the CPU = no reader; ring full; other). The reader
reports the growth of those counters since the last report, which is persisted
in the node's `meta` pin, so the next reader also reports what was lost while
no reader was attached. The kernel's PERF_RECORD_LOST counts are the ring-full
case seen from the ring side; they are returned for information only (they are
already part of `ring_full`).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from datapath import bpfsys
from datapath import layout as L

NR_PERF_EVENT_OPEN = 298  # x86-64
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
PAGE_SIZE = mmap.PAGESIZE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# A sample record: perf_event_header (8) + u32 raw size + raw data padded to 8.
RAW_SIZE = ((4 + L.EVENT_SIZE + 7) & ~7) - 4
RECORD_SIZE = 8 + 4 + RAW_SIZE
RECORD_DTYPE = np.dtype(
    {
        "names": ["type", "misc", "size", "raw_size", "ev"],
        "formats": ["<u4", "<u2", "<u2", "<u4", L.EVENT_DTYPE],
        "offsets": [0, 4, 6, 8, 12],
        "itemsize": RECORD_SIZE,
    }
)
EMPTY = np.zeros(0, dtype=L.EVENT_DTYPE)


class PerfEventAttr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("branch_sample_type", ctypes.c_uint64),
        ("sample_regs_user", ctypes.c_uint64),
        ("sample_stack_user", ctypes.c_uint32),
        ("clockid", ctypes.c_int32),
        ("sample_regs_intr", ctypes.c_uint64),
        ("aux_watermark", ctypes.c_uint32),
        ("sample_max_stack", ctypes.c_uint16),
        ("reserved", ctypes.c_uint16),
    ]


def perf_event_open_bpf_output(cpu: int, wakeup_events: int) -> int:
    attr = PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        size=ctypes.sizeof(PerfEventAttr),
        config=PERF_COUNT_SW_BPF_OUTPUT,
        sample_period=1,
        sample_type=PERF_SAMPLE_RAW,
        wakeup_events=max(1, wakeup_events),
    )
    fd = _libc.syscall(
        ctypes.c_long(NR_PERF_EVENT_OPEN),
        ctypes.byref(attr),
        ctypes.c_int(-1),
        ctypes.c_int(cpu),
        ctypes.c_int(-1),
        ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open(cpu {cpu}): {os.strerror(err)}")
    return int(fd)


def _ioctl(fd: int, req: int) -> None:
    if _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(req), ctypes.c_int(0)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Ring:
    """One CPU's perf ring buffer."""

    def __init__(self, cpu: int, pages: int, wakeup_events: int) -> None:
        if pages <= 0 or pages & (pages - 1):
            raise ValueError("pages must be a power of two")
        self.cpu = cpu
        self.fd = perf_event_open_bpf_output(cpu, wakeup_events)
        try:
            self.mm = mmap.mmap(
                self.fd, (pages + 1) * PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except BaseException:
            os.close(self.fd)
            raise
        self._head = ctypes.c_uint64.from_buffer(self.mm, 1024)
        self._tail = ctypes.c_uint64.from_buffer(self.mm, 1032)
        off = ctypes.c_uint64.from_buffer(self.mm, 1040).value
        size = ctypes.c_uint64.from_buffer(self.mm, 1048).value
        self.data_off = int(off) or PAGE_SIZE
        self.data_size = int(size) or pages * PAGE_SIZE
        _ioctl(self.fd, PERF_EVENT_IOC_ENABLE)

    def pending(self) -> int:
        return int(self._head.value - self._tail.value)

    def read(self) -> bytes:
        """Everything between tail and head; consumes it."""
        head = int(self._head.value)
        tail = int(self._tail.value)
        n = head - tail
        if n <= 0:
            return b""
        size = self.data_size
        start = tail % size
        base = self.data_off
        if start + n <= size:
            data = self.mm[base + start : base + start + n]
        else:
            first = size - start
            data = self.mm[base + start : base + size] + self.mm[base : base + n - first]
        self._tail.value = head  # x86: stores are not reordered before the loads above
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _ioctl(self.fd, PERF_EVENT_IOC_DISABLE)
        del self._head, self._tail
        self.mm.close()
        os.close(self.fd)


def parse_records(buf: bytes) -> tuple[np.ndarray, int]:
    """Samples of a ring's byte stream as events, and the kernel's lost count."""
    if not buf:
        return EMPTY, 0
    if len(buf) % RECORD_SIZE == 0:
        rec = np.frombuffer(buf, dtype=RECORD_DTYPE)
        if (
            np.all(rec["type"] == PERF_RECORD_SAMPLE)
            and np.all(rec["size"] == RECORD_SIZE)
            and np.all(rec["raw_size"] == RAW_SIZE)
        ):
            return rec["ev"].copy(), 0
    # mixed stream (lost records, foreign sizes): walk it
    events = bytearray()
    lost = 0
    off = 0
    end = len(buf)
    while off + 8 <= end:
        rtype, _misc, size = struct.unpack_from("<IHH", buf, off)
        if size < 8 or off + size > end:
            break
        if rtype == PERF_RECORD_SAMPLE and size >= 12:
            (raw_size,) = struct.unpack_from("<I", buf, off + 8)
            if raw_size >= L.EVENT_SIZE and size >= 12 + L.EVENT_SIZE:
                events += buf[off + 12 : off + 12 + L.EVENT_SIZE]
        elif rtype == PERF_RECORD_LOST and size >= 24:
            (n,) = struct.unpack_from("<Q", buf, off + 16)
            lost += n
        off += size
    if not events:
        return EMPTY, lost
    return np.frombuffer(bytes(events), dtype=L.EVENT_DTYPE), lost


@dataclass(frozen=True)
class Losses:
    """Events the program could not deliver, since the previous report."""

    no_reader: int = 0  # no ring was installed for the CPU (no reader attached)
    ring_full: int = 0  # the ring was full (the reader fell behind)
    other: int = 0
    ring_lost_records: int = 0  # kernel PERF_RECORD_LOST totals (part of ring_full)

    @property
    def total(self) -> int:
        return self.no_reader + self.ring_full + self.other

    def __bool__(self) -> bool:
        return self.total > 0 or self.ring_lost_records > 0

    def __add__(self, other: Losses) -> Losses:
        return Losses(
            self.no_reader + other.no_reader,
            self.ring_full + other.ring_full,
            self.other + other.other,
            self.ring_lost_records + other.ring_lost_records,
        )


class EventReader:
    """Reads a node's flow events. One reader per node at a time.

    poll(timeout) -> (events, losses): waits until at least one event or loss is
    available or `timeout` seconds passed; events is a numpy array of
    layout.EVENT_DTYPE. fileno() is an epoll descriptor that becomes readable
    when a ring woke (every `wakeup_events` samples); callers that integrate it
    into their own loop must also call drain() every `drain_interval`.
    """

    def __init__(
        self,
        events_pin: str,
        failed_out: bpfsys.BpfMap[Any, Any],
        meta: bpfsys.BpfMap[Any, Any],
        *,
        pages: int = 256,
        wakeup_events: int = 32,
        drain_interval: float = 0.025,
        sweep: Callable[[], np.ndarray] | None = None,
        sweep_interval: float = 1.0,
    ) -> None:
        from datapath.loader import META_ACK, Meta

        self.drain_interval = drain_interval
        self._sweep = sweep
        self._sweep_interval = sweep_interval
        self._next_sweep = time.monotonic() + sweep_interval
        self._failed = failed_out
        self._meta = meta
        self._ack_key = ctypes.c_uint32(META_ACK)
        self._meta_type = Meta
        self._events = bpfsys.BpfMap.from_pin(
            events_pin, ctypes.c_uint32, ctypes.c_uint32, "events"
        )
        self._rings: list[Ring] = []
        self._epoll = select.epoll()
        try:
            cpus = [c for c in bpfsys.online_cpus() if c < self._events.max_entries]
            for cpu in cpus:
                ring = Ring(cpu, pages, wakeup_events)
                self._rings.append(ring)
                self._events.update_fd(ctypes.c_uint32(cpu), ring.fd)
                self._epoll.register(ring.fd, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self._epoll.fileno()

    def _counters(self) -> list[int]:
        out = []
        for slot in range(L.FAILED_OUTPUT_SLOTS):
            vals = self._failed.lookup_percpu(ctypes.c_uint32(slot)) or []
            out.append(sum(int(v.value) for v in vals))
        return out

    def _take_losses(self, ring_lost: int) -> Losses:
        now = self._counters()
        v = self._meta.lookup(self._ack_key)
        ack = [int(x) for x in v.acked_failed] if v is not None else [0] * len(now)
        delta = [max(0, a - b) for a, b in zip(now, ack, strict=True)]
        if any(delta):
            m = self._meta_type()
            m.acked_failed[:] = now
            self._meta.update(self._ack_key, m)
        return Losses(
            no_reader=delta[L.FAILED_NO_READER],
            ring_full=delta[L.FAILED_RING_FULL],
            other=delta[L.FAILED_OTHER] + delta[3],
            ring_lost_records=ring_lost,
        )

    def drain(self) -> tuple[np.ndarray, Losses]:
        """Read every ring now (no waiting)."""
        parts = []
        lost = 0
        for ring in self._rings:
            buf = ring.read()
            if buf:
                ev, n = parse_records(buf)
                lost += n
                if len(ev):
                    parts.append(ev)
        losses = self._take_losses(lost)
        if self._sweep is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._sweep_interval
            swept = self._sweep()
            if len(swept):
                parts.append(swept)
        if not parts:
            return EMPTY, losses
        events = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(parts) > 1:
            events = events[np.argsort(events["ts_ns"], kind="stable")]
        return events, losses

    def poll(self, timeout: float | None = None) -> tuple[np.ndarray, Losses]:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            events, losses = self.drain()
            if len(events) or losses:
                return events, losses
            if deadline is None:
                wait = self.drain_interval
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return events, losses
                wait = min(self.drain_interval, remaining)
            self._epoll.poll(wait)

    def close(self) -> None:
        """Stop reading: the rings go, and (because the map fd that installed
        them closes) the program counts later events as `no_reader` losses."""
        for ring in self._rings:
            with contextlib.suppress(OSError):
                self._events.delete(ctypes.c_uint32(ring.cpu))
            with contextlib.suppress(Exception):
                self._epoll.unregister(ring.fd)
            ring.close()
        self._rings.clear()
        self._epoll.close()
        self._events.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
