"""Compile with bcc, pin programs and maps, reuse pins on restart.

Pins of node N live in <pin_root>/N/: one file per program (`from_pod`,
`to_pod`) and per map, and `meta` (written last: an ARRAY[1] map only user
space uses, holding the source hash, the next policy generation and the
perf-loss counts already reported). A load whose `meta` exists and carries the
current source hash reuses every pin: no compile, no map reset, conntrack and
the attached filters continue untouched. Otherwise the program is compiled and
everything is pinned afresh (old filters keep running the old programs until
they are re-attached).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import fcntl
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpf as bpf_sources
from datapath import bpfsys
from datapath import layout as L

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/sensilla")
LOCK_DIR = Path("/run/sensilla/datapath")
PROGRAMS = ("from_pod", "to_pod")
CFLAGS = ("-Wno-unused-function", "-Wno-macro-redefined")
META_MAGIC = 0x53454E53494C4C41  # "SENSILLA"
META_LOAD = 0
META_ACK = 1

MAPS: dict[str, tuple[Any, Any]] = {
    "endpoints": (ctypes.c_uint32, L.EndpointInfo),
    "ipcache4": (L.Ipcache4Key, L.IpcacheValue),
    "ipcache6": (L.Ipcache6Key, L.IpcacheValue),
    "policy": (ctypes.c_uint32, ctypes.c_uint32),
    "conntrack": (L.CtKey, L.CtEntry),
    "drops": (L.DropKey, L.DropState),
    "frags": (L.FragKey, L.FragValue),
    "config": (ctypes.c_uint32, L.DpConfig),
    "metrics": (ctypes.c_uint32, L.MetricValue),
    "failed_out": (ctypes.c_uint32, ctypes.c_uint64),
    "events": (ctypes.c_uint32, ctypes.c_uint32),
}


class Meta(ctypes.Structure):
    """A value of the `meta` pin (user space bookkeeping, not seen by BPF).
    Slot META_LOAD holds the load's identity and the generation counter; slot
    META_ACK holds `acked_failed` of the event reader (separate slots, so the two
    writers never overwrite each other's fields)."""

    _fields_ = [
        ("magic", ctypes.c_uint64),
        ("layout_version", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("source_hash", ctypes.c_uint8 * 32),
        ("loaded_ns", ctypes.c_uint64),  # CLOCK_REALTIME of the compile
        ("next_generation", ctypes.c_uint64),
        ("acked_failed", ctypes.c_uint64 * L.FAILED_OUTPUT_SLOTS),
    ]


class LoadResult(enum.Enum):
    REUSED = "reused"  # pins matched: nothing compiled, state kept
    LOADED = "loaded"  # compiled and pinned (nothing was pinned before)
    REPLACED = "replaced"  # compiled and pinned over pins of another source


@dataclass
class Pinned:
    """Open file descriptors of one node's pinned objects."""

    dir: Path
    progs: dict[str, int]  # name -> fd
    prog_ids: dict[str, int]
    maps: dict[str, bpfsys.BpfMap[Any, Any]]
    meta: bpfsys.BpfMap[ctypes.c_uint32, Meta]

    def close(self) -> None:
        for fd in self.progs.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.progs.clear()
        for m in self.maps.values():
            m.close()
        self.maps.clear()
        self.meta.close()


def expected_hash() -> bytes:
    import bcc  # the Debian package, exposed to the venv

    return bpf_sources.source_hash(
        *CFLAGS,
        f"bcc={getattr(bcc, '__version__', '?')}",
        f"layout={L.SENSILLA_LAYOUT_VERSION}",
        f"kernel={platform.release()}",
    )


@contextlib.contextmanager
def node_lock(node: str) -> Iterator[None]:
    """Serialise loads and unloads of one node's pins across processes."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_DIR / f"{node}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_lock(node: str) -> None:
    """Remove a node's lock file (on unload, while holding the lock)."""
    with contextlib.suppress(FileNotFoundError):
        (LOCK_DIR / f"{node}.lock").unlink()


def check_node_name(node: str) -> None:
    if not node or len(node) > 64 or not all(c.isalnum() or c in "-_." for c in node):
        raise ValueError(f"bad node name {node!r}: use letters, digits, '-', '_', '.'")
    if node in (".", ".."):
        raise ValueError(f"bad node name {node!r}")


def ensure_bpffs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(root)
    del st
    # BPF_FS_MAGIC check: pins only work on a bpf filesystem
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    best = ""
    fstype = ""
    for mnt, typ in mounts:
        if (str(root) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
            best, fstype = mnt, typ
    if fstype != "bpf":
        raise RuntimeError(f"{root} is not on a bpf filesystem (found {fstype or 'nothing'})")


def _pin_names() -> list[str]:
    return [*PROGRAMS, *MAPS, "meta"]


def read_meta(meta: bpfsys.BpfMap[ctypes.c_uint32, Meta], slot: int = META_LOAD) -> Meta:
    v = meta.lookup(ctypes.c_uint32(slot))
    return v if v is not None else Meta()


def open_pins(d: Path) -> Pinned:
    progs: dict[str, int] = {}
    ids: dict[str, int] = {}
    maps: dict[str, bpfsys.BpfMap[Any, Any]] = {}
    try:
        for p in PROGRAMS:
            fd = bpfsys.obj_get(str(d / p))
            progs[p] = fd
            ids[p] = int(bpfsys.prog_info(fd).id)
        for name, (kt, vt) in MAPS.items():
            maps[name] = bpfsys.BpfMap.from_pin(str(d / name), kt, vt, name)
        meta = bpfsys.BpfMap.from_pin(str(d / "meta"), ctypes.c_uint32, Meta, "meta")
    except BaseException:
        for fd in progs.values():
            os.close(fd)
        for m in maps.values():
            m.close()
        raise
    return Pinned(d, progs, ids, maps, meta)


def unpin_all(d: Path) -> None:
    """Remove every pin of a node directory (the objects live on while in use), then
    the pin root above it if that left it empty: loading created both."""
    if d.exists():
        for entry in d.iterdir():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        with contextlib.suppress(FileNotFoundError, OSError):
            d.rmdir()
    # fails while another node's pins are there (ENOTEMPTY) or on a mount point
    with contextlib.suppress(OSError):
        d.parent.rmdir()


def _make_pin_dir(d: Path) -> None:
    """mkdir -p that tolerates another node's unload removing the (empty) pin root
    between creating it and creating `d` in it."""
    for attempt in range(3):
        try:
            d.mkdir(parents=True, exist_ok=True)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def _pins_complete(d: Path) -> bool:
    return all((d / n).exists() for n in _pin_names())


def compile_and_pin(d: Path, digest: bytes) -> None:
    """Compile with bcc, load both programs, pin programs and maps, then meta."""
    from bcc import BPF

    b = BPF(  # bcc wants bytes (a str is converted with a DeprecationWarning)
        text=bpf_sources.source_text().encode(),
        cflags=[f"-I{bpf_sources.SOURCE_DIR}", *CFLAGS],
    )
    try:
        _make_pin_dir(d)
        for name in _pin_names():
            with contextlib.suppress(FileNotFoundError):
                (d / name).unlink()
        for p in PROGRAMS:
            fn = b.load_func(p.encode(), BPF.SCHED_CLS)
            bpfsys.obj_pin(fn.fd, str(d / p))
        for name in MAPS:
            bpfsys.obj_pin(b.get_table(name.encode()).map_fd, str(d / name))
    finally:
        b.cleanup()
    fd = bpfsys.map_create(bpfsys.MAP_TYPE_ARRAY, 4, ctypes.sizeof(Meta), 2, name="sensilla_meta")
    meta_map = bpfsys.BpfMap(fd, ctypes.c_uint32, Meta, "meta")
    try:
        m = Meta(magic=META_MAGIC, layout_version=L.SENSILLA_LAYOUT_VERSION)
        m.source_hash[:] = list(digest)
        m.loaded_ns = time.time_ns()
        m.next_generation = 1  # 0 means "no policy" in conntrack entries
        meta_map.update(ctypes.c_uint32(META_LOAD), m)
        bpfsys.obj_pin(meta_map.fd, str(d / "meta"))
    finally:
        meta_map.close()


def load(node: str, pin_root: Path) -> tuple[LoadResult, Pinned]:
    """Open node's pins, compiling first if they are missing or stale.
    The caller holds node_lock(node)."""
    check_node_name(node)
    ensure_bpffs(pin_root)
    d = pin_root / node
    digest = expected_hash()
    had_pins = d.exists() and any(d.iterdir())
    if _pins_complete(d):
        try:
            pinned = open_pins(d)
        except (OSError, ValueError):
            pinned = None
        if pinned is not None:
            meta = read_meta(pinned.meta)
            if meta.magic == META_MAGIC and bytes(meta.source_hash) == digest:
                return LoadResult.REUSED, pinned
            pinned.close()
    compile_and_pin(d, digest)
    return (LoadResult.REPLACED if had_pins else LoadResult.LOADED), open_pins(d)


def is_missing(exc: OSError) -> bool:
    return exc.errno in (errno.ENOENT, errno.ENOTDIR)
