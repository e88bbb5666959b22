"""A small ctypes wrapper over the bpf(2) system call.

Typed map access that does not depend on bcc's tables, so that a restarted agent
can work on pinned maps and programs without compiling anything: map create,
lookup, update, delete and iteration; object pin and get; object info; program
test runs; run-time statistics. x86-64 Linux only.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from typing import Any, Generic, TypeVar, cast

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

NR_BPF = 321  # x86-64

# commands
MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_PIN = 6
OBJ_GET = 7
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
MAP_GET_FD_BY_ID = 14
OBJ_GET_INFO_BY_FD = 15
MAP_LOOKUP_AND_DELETE_ELEM = 21
MAP_LOOKUP_BATCH = 24
ENABLE_STATS = 32

# map types
MAP_TYPE_HASH = 1
MAP_TYPE_ARRAY = 2
MAP_TYPE_PERF_EVENT_ARRAY = 4
MAP_TYPE_PERCPU_HASH = 5
MAP_TYPE_PERCPU_ARRAY = 6
MAP_TYPE_LRU_HASH = 9
MAP_TYPE_LRU_PERCPU_HASH = 10
MAP_TYPE_LPM_TRIE = 11
MAP_TYPE_ARRAY_OF_MAPS = 12
MAP_TYPE_HASH_OF_MAPS = 13

PERCPU_TYPES = frozenset({MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH})

# map flags
F_NO_PREALLOC = 1
# update flags
ANY = 0
NOEXIST = 1
EXIST = 2
# object open flags
F_RDONLY = 1 << 3

STATS_RUN_TIME = 0


class BpfError(OSError):
    """A failed bpf(2) call; `errno` holds the error number."""


def _errcheck(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({what}): {os.strerror(err)}")
    return ret


def _size(obj: Any) -> int:
    return ctypes.sizeof(obj)


def _address(obj: Any) -> int:
    return ctypes.addressof(obj)


def _addr(buf: Any) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def sys_bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    ret = _libc.syscall(
        ctypes.c_long(NR_BPF),
        ctypes.c_int(cmd),
        ctypes.byref(attr),
        ctypes.c_uint(ctypes.sizeof(attr)),
    )
    return _errcheck(int(ret), what)


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
        ("map_ifindex", ctypes.c_uint32),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad0", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # also next_key
        ("flags", ctypes.c_uint64),
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _GetFdByIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class BpfMapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class BpfProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=_addr(p), bpf_fd=fd)
    sys_bpf(OBJ_PIN, attr, f"OBJ_PIN {path}")


def obj_get(path: str, flags: int = 0) -> int:
    """Open a pinned object; returns a new file descriptor (close it yourself)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=_addr(p), file_flags=flags)
    return sys_bpf(OBJ_GET, attr, f"OBJ_GET {path}")


def _info(fd: int, info: ctypes.Structure, what: str) -> None:
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info))
    sys_bpf(OBJ_GET_INFO_BY_FD, attr, what)


def map_info(fd: int) -> BpfMapInfo:
    info = BpfMapInfo()
    _info(fd, info, "OBJ_GET_INFO_BY_FD map")
    return info


def prog_info(fd: int) -> BpfProgInfo:
    info = BpfProgInfo()
    _info(fd, info, "OBJ_GET_INFO_BY_FD prog")
    return info


def prog_fd_by_id(prog_id: int) -> int:
    attr = _GetFdByIdAttr(id=prog_id)
    return sys_bpf(PROG_GET_FD_BY_ID, attr, f"PROG_GET_FD_BY_ID {prog_id}")


def map_fd_by_id(map_id: int) -> int:
    attr = _GetFdByIdAttr(id=map_id)
    return sys_bpf(MAP_GET_FD_BY_ID, attr, f"MAP_GET_FD_BY_ID {map_id}")


def enable_stats() -> int:
    """Turn on run-time statistics (run_cnt, run_time_ns) for every program while
    the returned file descriptor stays open."""
    attr = _EnableStatsAttr(type=STATS_RUN_TIME)
    return sys_bpf(ENABLE_STATS, attr, "ENABLE_STATS")


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int = 0,
    name: str = "",
    inner_map_fd: int = 0,
) -> int:
    attr = _MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        map_name=name.encode()[:15],
    )
    return sys_bpf(MAP_CREATE, attr, f"MAP_CREATE {name or map_type}")


class TestRunResult:
    __slots__ = ("data", "duration_ns", "retval")

    def __init__(self, retval: int, data: bytes, duration_ns: int) -> None:
        self.retval = retval
        self.data = data
        self.duration_ns = duration_ns


def prog_test_run(
    prog_fd: int, data: bytes, *, ctx: bytes | None = None, repeat: int = 1
) -> TestRunResult:
    """Run a program on `data` (BPF_PROG_TEST_RUN). For TC programs `ctx` may be a
    struct __sk_buff whose allowed fields (ifindex, mark, ...) the kernel takes."""
    din = ctypes.create_string_buffer(data, len(data))
    out_len = max(len(data) + 256, 4096)
    dout = ctypes.create_string_buffer(out_len)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data),
        data_size_out=out_len,
        data_in=_addr(din),
        data_out=_addr(dout),
        repeat=repeat,
    )
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        attr.ctx_in = _addr(cin)
        attr.ctx_size_in = len(ctx)
    sys_bpf(PROG_TEST_RUN, attr, "PROG_TEST_RUN")
    return TestRunResult(attr.retval, dout.raw[: attr.data_size_out], attr.duration)


def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU value count of per-CPU maps)."""
    with open("/sys/devices/system/cpu/possible") as f:
        return _count_cpu_list(f.read())


def online_cpus() -> list[int]:
    with open("/sys/devices/system/cpu/online") as f:
        return _expand_cpu_list(f.read())


def _expand_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def _count_cpu_list(text: str) -> int:
    cpus = _expand_cpu_list(text)
    return max(cpus) + 1 if cpus else 1


K = TypeVar("K")  # a ctypes key type
V = TypeVar("V")  # a ctypes value type


class BpfMap(Generic[K, V]):
    """A map file descriptor with typed keys and values (ctypes types).

    For per-CPU maps, `lookup` returns one value per possible CPU. The map owns
    its file descriptor: `close()` it (or use it as a context manager).
    """

    def __init__(self, fd: int, key_type: type[K], value_type: type[V], name: str = "") -> None:
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self.name = name
        info = map_info(fd)
        self.map_type = int(info.type)
        self.max_entries = int(info.max_entries)
        self.map_id = int(info.id)
        if info.key_size != _size(key_type) or info.value_size != _size(value_type):
            os.close(fd)
            raise ValueError(
                f"map {name or info.name!r}: kernel sizes key={info.key_size} "
                f"value={info.value_size}, Python expects key={_size(key_type)} "
                f"value={_size(value_type)}"
            )
        self.percpu = self.map_type in PERCPU_TYPES
        self.ncpus = possible_cpus() if self.percpu else 1
        self._slot = (_size(value_type) + 7) & ~7

    @classmethod
    def from_pin(
        cls, path: str, key_type: type[K], value_type: type[V], name: str = ""
    ) -> BpfMap[K, V]:
        return cls(obj_get(path), key_type, value_type, name or os.path.basename(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap[K, V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        size = self._slot * self.ncpus if self.percpu else _size(self.value_type)
        return ctypes.create_string_buffer(size)

    def lookup_raw(self, key: K) -> ctypes.Array[ctypes.c_char] | None:
        buf = self._value_buffer()
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(buf))
        try:
            sys_bpf(MAP_LOOKUP_ELEM, attr, f"MAP_LOOKUP_ELEM {self.name}")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return buf

    def lookup(self, key: K) -> V | None:
        """The value (for per-CPU maps: the value of CPU 0; see `lookup_percpu`)."""
        buf = self.lookup_raw(key)
        if buf is None:
            return None
        return cast(V, self.value_type.from_buffer_copy(buf, 0))  # type: ignore[attr-defined]

    def lookup_percpu(self, key: K) -> list[V] | None:
        buf = self.lookup_raw(key)
        if buf is None:
            return None
        vt: Any = self.value_type
        return [cast(V, vt.from_buffer_copy(buf, i * self._slot)) for i in range(self.ncpus)]

    def update(self, key: K, value: V, flags: int = ANY) -> None:
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(value), flags=flags)
        sys_bpf(MAP_UPDATE_ELEM, attr, f"MAP_UPDATE_ELEM {self.name}")

    def update_percpu(self, key: K, values: list[V], flags: int = ANY) -> None:
        buf = self._value_buffer()
        for i, v in enumerate(values[: self.ncpus]):
            dst = _address(buf) + i * self._slot
            ctypes.memmove(dst, _address(v), _size(v))
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(buf), flags=flags)
        sys_bpf(MAP_UPDATE_ELEM, attr, f"MAP_UPDATE_ELEM {self.name}")

    def update_fd(self, key: K, fd: int, flags: int = ANY) -> None:
        """Store a file descriptor (map-in-map, perf event array, prog array)."""
        v = ctypes.c_uint32(fd)
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(v), flags=flags)
        sys_bpf(MAP_UPDATE_ELEM, attr, f"MAP_UPDATE_ELEM {self.name}")

    def lookup_and_delete(self, key: K) -> V | None:
        """Atomically take `key`'s value out of a hash map (None if absent)."""
        buf = self._value_buffer()
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(buf))
        try:
            sys_bpf(MAP_LOOKUP_AND_DELETE_ELEM, attr, f"MAP_LOOKUP_AND_DELETE_ELEM {self.name}")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        vt: Any = self.value_type
        return cast(V, vt.from_buffer_copy(buf, 0))

    def lookup_id(self, key: K) -> int | None:
        """For map-in-map: the id of the inner map stored at `key`."""
        v = ctypes.c_uint32()
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key), value=_addr(v))
        try:
            sys_bpf(MAP_LOOKUP_ELEM, attr, f"MAP_LOOKUP_ELEM {self.name}")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return int(v.value)

    def delete(self, key: K) -> bool:
        """Delete `key`; False when it was not there."""
        attr = _MapElemAttr(map_fd=self.fd, key=_addr(key))
        try:
            sys_bpf(MAP_DELETE_ELEM, attr, f"MAP_DELETE_ELEM {self.name}")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self) -> Iterator[K]:
        """Every key (a snapshot walk with GET_NEXT_KEY; entries may change meanwhile)."""
        cur: K | None = None
        while True:
            nxt = self.key_type()
            kaddr = _addr(cur) if cur is not None else 0
            attr = _MapElemAttr(map_fd=self.fd, key=kaddr, value=_addr(nxt))
            try:
                sys_bpf(MAP_GET_NEXT_KEY, attr, f"MAP_GET_NEXT_KEY {self.name}")
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            yield nxt
            cur = nxt

    def items(self) -> Iterator[tuple[K, V]]:
        for k in list(self.keys()):
            v = self.lookup(k)
            if v is not None:
                yield k, v

    def lookup_all_raw(self, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """Every (key, value) with BPF_MAP_LOOKUP_BATCH: (keys, values, count) as
        raw bytes; values of per-CPU maps hold one 8-aligned slot per CPU."""
        ksize = _size(self.key_type)
        vsize = self._slot * self.ncpus if self.percpu else _size(self.value_type)
        keys_out = bytearray()
        vals_out = bytearray()
        total = 0
        in_batch = ctypes.c_uint64(0)
        out_batch = ctypes.c_uint64(0)
        first = True
        while True:
            kbuf = ctypes.create_string_buffer(ksize * chunk)
            vbuf = ctypes.create_string_buffer(vsize * chunk)
            attr = _BatchAttr(
                in_batch=0 if first else _address(in_batch),
                out_batch=_address(out_batch),
                keys=_address(kbuf),
                values=_address(vbuf),
                count=chunk,
                map_fd=self.fd,
            )
            done = False
            try:
                sys_bpf(MAP_LOOKUP_BATCH, attr, f"MAP_LOOKUP_BATCH {self.name}")
            except BpfError as exc:
                if exc.errno != errno.ENOENT:
                    raise
                done = True
            n = int(attr.count)
            keys_out += kbuf.raw[: n * ksize]
            vals_out += vbuf.raw[: n * vsize]
            total += n
            if done or n == 0:
                return bytes(keys_out), bytes(vals_out), total
            in_batch.value = out_batch.value
            first = False

    def clear(self) -> int:
        """Delete every key (for arrays, nothing to delete); returns how many."""
        n = 0
        for k in list(self.keys()):
            if self.delete(k):
                n += 1
        return n
