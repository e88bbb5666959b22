"""The datapath's public API: what the collector calls. See docs/datapath.md."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import ipaddress
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datapath import bpfsys, loader, tc
from datapath import layout as L
from datapath.perf import EMPTY as _EMPTY_EVENTS
from datapath.perf import EventReader
from datapath.policy import compile_entries
from datapath.types import Direction, EndpointInfo, EndpointPolicy, IPNetwork, Verdict

DEFAULT_PIN_ROOT = loader.DEFAULT_PIN_ROOT
IpcacheMapping = Mapping[IPNetwork, int] | Mapping[str, int] | Mapping[IPNetwork | str, int]
LoadResult = loader.LoadResult
HookBusyError = tc.HookBusyError


class AggregationLevel(enum.IntEnum):
    """How much the programs report (see docs/datapath.md for exact definitions)."""

    NONE = L.AGG_NONE
    LOW = L.AGG_LOW
    MEDIUM = L.AGG_MEDIUM
    MAXIMUM = L.AGG_MAXIMUM


@dataclass(frozen=True)
class AggregationConfig:
    level: AggregationLevel
    report_interval_s: float
    drop_interval_s: float


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


@dataclass(frozen=True)
class ProgStats:
    prog_id: int
    run_cnt: int
    run_time_ns: int
    recursion_misses: int
    verified_insns: int
    xlated_len: int


@dataclass(frozen=True)
class IpcacheDelta:
    updated: int
    removed: int


class NotLoadedError(RuntimeError):
    """ensure_loaded() has not been called (or unload() was)."""


class StatsHandle:
    """Keeps BPF run-time statistics on while open."""

    def __init__(self) -> None:
        self._fd = bpfsys.enable_stats()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> StatsHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _network(key: IPNetwork | str) -> IPNetwork:
    if isinstance(key, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return key
    return ipaddress.ip_network(key, strict=True)


def _check_u32(what: str, v: int) -> None:
    if not 0 <= v <= 0xFFFFFFFF:
        raise ValueError(f"{what} {v} out of range (0..2^32-1)")


def _check_endpoint_id(endpoint_id: int) -> None:
    if not 1 <= endpoint_id <= L.MAX_ENDPOINT_ID:
        raise ValueError(f"endpoint id {endpoint_id} out of range (1..{L.MAX_ENDPOINT_ID})")


class Datapath:
    """One node's datapath: pinned programs and maps under <pin_root>/<node>.

    Open with Datapath.open(); call ensure_loaded() before anything else.
    All methods are thread-safe. Interfaces are resolved and attached in the
    network namespace given at open (None: the caller's).
    """

    def __init__(self, node_name: str, pin_root: Path, netns: str | None) -> None:
        loader.check_node_name(node_name)
        self.node_name = node_name
        self.pin_root = Path(pin_root)
        self.netns = netns
        self._pinned: loader.Pinned | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls, node_name: str, *, pin_root: str | Path = DEFAULT_PIN_ROOT, netns: str | None = None
    ) -> Datapath:
        return cls(node_name, Path(pin_root), netns)

    @property
    def pin_dir(self) -> Path:
        return self.pin_root / self.node_name

    def ensure_loaded(self) -> LoadResult:
        """Reuse the node's pins when they carry the current source hash;
        otherwise compile with bcc and pin. REUSED keeps every map (conntrack,
        endpoints, policies) and the attached filters; LOADED/REPLACED start
        with empty maps: install policies, the ipcache and endpoints, then
        attach (re-attaching replaces filters of a previous program)."""
        with self._lock:
            if self._pinned is not None:
                return LoadResult.REUSED
            with loader.node_lock(self.node_name):
                result, pinned = loader.load(self.node_name, self.pin_root)
            self._pinned = pinned
            return result

    def close(self) -> None:
        """Release file descriptors; pins, maps and filters stay (enforcement
        continues without this process)."""
        with self._lock:
            if self._pinned is not None:
                self._pinned.close()
                self._pinned = None

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def unload(self) -> None:
        """Detach from every interface of our namespace that carries our
        filters (removing clsact qdiscs left empty) and remove all pins."""
        with self._lock, loader.node_lock(self.node_name):
            with tc.netlink(self.netns) as ipr:
                for idx in tc.interfaces_with_our_filters(ipr, self.node_name):
                    tc.detach(ipr, idx, self.node_name)
            if self._pinned is not None:
                self._pinned.close()
                self._pinned = None
            loader.unpin_all(self.pin_dir)
            loader.remove_lock(self.node_name)

    @property
    def _p(self) -> loader.Pinned:
        if self._pinned is None:
            raise NotLoadedError(f"datapath of node {self.node_name!r} is not loaded")
        return self._pinned

    def _map(self, name: str) -> bpfsys.BpfMap[Any, Any]:
        return self._p.maps[name]

    # ------------------------------------------------------------ attach

    def attach(self, dev: int | str) -> bool:
        """Attach from_pod (TC ingress) and to_pod (TC egress) to `dev`.
        Idempotent; replaces our own filters of an older program; raises
        HookBusyError when another program holds a hook. True if changed."""
        p = self._p
        progs = {name: (p.progs[name], p.prog_ids[name]) for name in loader.PROGRAMS}
        with tc.netlink(self.netns) as ipr:
            return tc.attach(ipr, tc.resolve(ipr, dev), self.node_name, progs)

    def detach(self, dev: int | str) -> bool:
        """Remove our filters from `dev` (and its clsact qdisc if left empty)."""
        with tc.netlink(self.netns) as ipr:
            try:
                idx = tc.resolve(ipr, dev)
            except LookupError:
                return False
            return tc.detach(ipr, idx, self.node_name)

    def attached(self) -> list[int]:
        """Interfaces of our namespace that carry our filters."""
        with tc.netlink(self.netns) as ipr:
            return tc.interfaces_with_our_filters(ipr, self.node_name)

    # ------------------------------------------------------------ endpoints

    def set_endpoint(self, info: EndpointInfo) -> None:
        """Make the programs handle `info.ifindex` as endpoint `info.endpoint_id`.
        Install the endpoint's policies first: before this, its packets are
        dropped (DROP_EP_NOT_READY); after it, an empty policy slot means
        "not enforced"."""
        _check_endpoint_id(info.endpoint_id)
        _check_u32("ifindex", info.ifindex)
        _check_u32("identity", info.identity)
        v = L.EndpointInfo(endpoint_id=info.endpoint_id, identity=info.identity)
        with self._lock:
            self._map("endpoints").update(ctypes.c_uint32(info.ifindex), v)

    def remove_endpoint(self, ifindex: int) -> None:
        """Forget an endpoint: its entry, both policy slots and its conntrack."""
        with self._lock:
            m = self._map("endpoints")
            v = m.lookup(ctypes.c_uint32(ifindex))
            m.delete(ctypes.c_uint32(ifindex))
            if v is not None:
                for d in Direction:
                    self._map("policy").delete(ctypes.c_uint32(v.endpoint_id * 2 + int(d)))
            self.flush_conntrack(ifindex)

    def endpoints(self) -> dict[int, EndpointInfo]:
        out = {}
        for k, v in self._map("endpoints").items():
            out[int(k.value)] = EndpointInfo(int(k.value), int(v.endpoint_id), int(v.identity))
        return out

    # ------------------------------------------------------------ ipcache

    def ipcache(self) -> dict[IPNetwork, int]:
        out: dict[IPNetwork, int] = {}
        for k4, v in self._map("ipcache4").items():
            out[ipaddress.IPv4Network((bytes(k4.addr), int(k4.prefixlen)))] = int(v.identity)
        for k6, v in self._map("ipcache6").items():
            out[ipaddress.IPv6Network((bytes(k6.addr), int(k6.prefixlen)))] = int(v.identity)
        return out

    def sync_ipcache(self, mapping: IpcacheMapping) -> IpcacheDelta:
        """Make the ipcache equal `mapping` (prefix -> identity): entries that
        differ are written, then stale ones removed. Each entry changes
        atomically; addresses not covered resolve to world (2)."""
        want: dict[IPNetwork, int] = {}
        for k, ident in mapping.items():
            net = _network(k)
            _check_u32("identity", ident)
            want[net] = int(ident)
        with self._lock:
            have = self.ipcache()
            updated = removed = 0
            for net, ident in want.items():
                if have.get(net) != ident:
                    self._ipcache_write(net, ident)
                    updated += 1
            for net in have:
                if net not in want:
                    self._ipcache_delete(net)
                    removed += 1
            return IpcacheDelta(updated, removed)

    def _ipcache_key(self, net: IPNetwork) -> tuple[str, Any]:
        if net.version == 4:
            k4 = L.Ipcache4Key(prefixlen=net.prefixlen)
            k4.addr[:] = list(net.network_address.packed)
            return "ipcache4", k4
        k6 = L.Ipcache6Key(prefixlen=net.prefixlen)
        k6.addr[:] = list(net.network_address.packed)
        return "ipcache6", k6

    def _ipcache_write(self, net: IPNetwork, identity: int) -> None:
        name, key = self._ipcache_key(net)
        self._map(name).update(key, L.IpcacheValue(identity=identity))

    def _ipcache_delete(self, net: IPNetwork) -> None:
        name, key = self._ipcache_key(net)
        self._map(name).delete(key)

    # ------------------------------------------------------------ policy

    def _next_generation(self) -> int:
        meta = self._p.meta
        m = loader.read_meta(meta)
        gen = int(m.next_generation) or 1
        nxt = gen + 1
        if nxt > 0xFFFFFFFF:
            nxt = 1
        m.next_generation = nxt
        meta.update(ctypes.c_uint32(loader.META_LOAD), m)
        return gen

    def install_policy(self, endpoint_id: int, direction: Direction, policy: EndpointPolicy) -> int:
        """Install `policy` for (endpoint, direction) atomically: a new inner
        trie is filled, then swapped into the outer slot in one update; packets
        see the old policy or the new one. Established connections are judged
        again by the new policy on their next forward packet. Not enforced:
        the slot is emptied. Returns the new generation (0 when emptied)."""
        _check_endpoint_id(endpoint_id)
        d = Direction(direction)
        slot = ctypes.c_uint32(endpoint_id * 2 + int(d))
        with self._lock:
            outer = self._map("policy")
            if not policy.enforced:
                outer.delete(slot)
                return 0
            gen = self._next_generation()
            entries = compile_entries(policy, gen)
            fd = bpfsys.map_create(
                bpfsys.MAP_TYPE_LPM_TRIE,
                ctypes.sizeof(L.PolicyKey),
                ctypes.sizeof(L.PolicyValue),
                L.POLICY_INNER_MAX,
                bpfsys.F_NO_PREALLOC,
                name=f"pol_{endpoint_id}_{'in' if d == Direction.INGRESS else 'eg'}",
            )
            with bpfsys.BpfMap(fd, L.PolicyKey, L.PolicyValue, "policy-inner") as inner:
                for e in entries:
                    inner.update(e.key(), e.value())
                outer.update_fd(slot, inner.fd)
            return gen

    def policy_entries(
        self, endpoint_id: int, direction: Direction
    ) -> list[tuple[L.PolicyKey, L.PolicyValue]] | None:
        """The trie in force for (endpoint, direction); None when not enforced."""
        _check_endpoint_id(endpoint_id)
        slot = ctypes.c_uint32(endpoint_id * 2 + int(Direction(direction)))
        map_id = self._map("policy").lookup_id(slot)
        if map_id is None:
            return None
        fd = bpfsys.map_fd_by_id(map_id)
        with bpfsys.BpfMap(fd, L.PolicyKey, L.PolicyValue, "policy-inner") as inner:
            return list(inner.items())

    # ------------------------------------------------------------ config

    def set_aggregation(
        self,
        level: AggregationLevel | int | str,
        report_interval_s: float = 5.0,
        *,
        drop_interval_s: float = 1.0,
    ) -> None:
        """Set the aggregation level and intervals; takes effect at once."""
        if isinstance(level, str):
            try:
                lvl = AggregationLevel[level.upper()]
            except KeyError:
                raise ValueError(f"unknown aggregation level {level!r}") from None
        else:
            lvl = AggregationLevel(level)
        if not 0 < report_interval_s <= 86400 or not 0 < drop_interval_s <= 86400:
            raise ValueError("intervals must be in (0, 86400] seconds")
        with self._lock:
            m = self._map("config")
            cfg = m.lookup(ctypes.c_uint32(0)) or L.DpConfig()
            cfg.aggregation = int(lvl)
            cfg.report_interval_ns = int(report_interval_s * 1e9)
            cfg.drop_interval_ns = int(drop_interval_s * 1e9)
            m.update(ctypes.c_uint32(0), cfg)

    def aggregation(self) -> AggregationConfig:
        cfg = self._map("config").lookup(ctypes.c_uint32(0))
        if cfg is None or not cfg.report_interval_ns:
            return AggregationConfig(
                AggregationLevel(L.DEFAULT_AGGREGATION),
                L.DEFAULT_REPORT_INTERVAL_NS / 1e9,
                L.DEFAULT_DROP_INTERVAL_NS / 1e9,
            )
        return AggregationConfig(
            AggregationLevel(int(cfg.aggregation)),
            cfg.report_interval_ns / 1e9,
            (cfg.drop_interval_ns or L.DEFAULT_DROP_INTERVAL_NS) / 1e9,
        )

    def set_conntrack_timeouts(
        self,
        *,
        tcp_syn_s: float | None = None,
        tcp_established_s: float | None = None,
        tcp_close_s: float | None = None,
        other_s: float | None = None,
    ) -> None:
        """Override conntrack lifetimes (None keeps the current value; defaults:
        SYN 60 s, established 6 h, after FIN/RST 10 s, non-TCP 60 s)."""
        with self._lock:
            m = self._map("config")
            cfg = m.lookup(ctypes.c_uint32(0)) or L.DpConfig()
            if not cfg.report_interval_ns:  # keep the defaults explicit
                cfg.aggregation = L.DEFAULT_AGGREGATION
                cfg.report_interval_ns = L.DEFAULT_REPORT_INTERVAL_NS
                cfg.drop_interval_ns = L.DEFAULT_DROP_INTERVAL_NS
            for field, v in (
                ("ct_tcp_syn_ns", tcp_syn_s),
                ("ct_tcp_established_ns", tcp_established_s),
                ("ct_tcp_close_ns", tcp_close_s),
                ("ct_other_ns", other_s),
            ):
                if v is not None:
                    if not 0 < v <= 7 * 86400:
                        raise ValueError(f"{field}: {v} s out of range")
                    setattr(cfg, field, int(v * 1e9))
            m.update(ctypes.c_uint32(0), cfg)

    # ------------------------------------------------------------ observability

    def read_metrics(self) -> dict[tuple[Direction, Verdict, int], Counter]:
        """Packets and bytes by (direction, verdict, drop reason), summed over
        CPUs; only non-zero entries. Forwarded packets have reason 0; AUDIT
        packets reason 133."""
        m = self._map("metrics")
        keys, vals, n = m.lookup_all_raw()
        if n == 0:
            return {}
        ncpu = m.ncpus
        k = np.frombuffer(keys, dtype="<u4", count=n)
        v = np.frombuffer(vals, dtype="<u8").reshape(n, ncpu, 2).sum(axis=1)
        out = {}
        for i in np.nonzero(v[:, 0])[0]:
            d, verdict, reason = L.metric_key_split(int(k[i]))
            try:
                key = (Direction(d), Verdict(verdict), reason)
            except ValueError:
                continue
            out[key] = Counter(int(v[i, 0]), int(v[i, 1]))
        return out

    def failed_outputs(self) -> dict[str, int]:
        """Cumulative failed perf outputs by cause (what the reader reports as losses)."""
        m = self._map("failed_out")
        names = {
            L.FAILED_NO_READER: "no_reader",
            L.FAILED_RING_FULL: "ring_full",
            L.FAILED_OTHER: "other",
        }
        out = {}
        for slot, name in names.items():
            vals = m.lookup_percpu(ctypes.c_uint32(slot)) or []
            out[name] = sum(int(x.value) for x in vals)
        return out

    def enable_stats(self) -> StatsHandle:
        """Turn on run_cnt/run_time_ns accounting while the handle is open."""
        return StatsHandle()

    def prog_stats(self) -> dict[str, ProgStats]:
        out = {}
        for name, fd in self._p.progs.items():
            info = bpfsys.prog_info(fd)
            out[name] = ProgStats(
                int(info.id),
                int(info.run_cnt),
                int(info.run_time_ns),
                int(info.recursion_misses),
                int(info.verified_insns),
                int(info.xlated_prog_len),
            )
        return out

    def event_reader(
        self,
        *,
        pages: int = 256,
        wakeup_events: int = 32,
        drain_interval_s: float = 0.025,
        sweep_interval_s: float | None = 1.0,
    ) -> EventReader:
        """Open the node's perf rings (one reader per node at a time). Every
        `sweep_interval_s` the reader also collects suppressed-drop counts that
        no later drop carried (see sweep_suppressed_drops); None turns that off."""
        p = self._p
        return EventReader(
            str(p.dir / "events"),
            p.maps["failed_out"],
            p.meta,
            pages=pages,
            wakeup_events=wakeup_events,
            drain_interval=drain_interval_s,
            sweep=self.sweep_suppressed_drops if sweep_interval_s else None,
            sweep_interval=sweep_interval_s or 0.0,
        )

    def sweep_suppressed_drops(self) -> np.ndarray:
        """Drop events for rate-limited drops that no later drop reported: every
        drop-tracking entry with a suppressed count whose interval has passed is
        taken out of the map (atomically) and turned into an EV_DROP event with
        EVF_SYNTHETIC, `suppressed` = the count, `packets` = 0. The next drop of
        that tuple starts a new interval (and is reported at once)."""
        m = self._map("drops")
        keys, vals, n = m.lookup_all_raw()
        if n == 0:
            return _EMPTY_EVENTS
        interval = int(self.aggregation().drop_interval_s * 1e9)
        now = time.monotonic_ns()
        ks = ctypes.sizeof(L.DropKey)
        st = np.frombuffer(
            vals,
            dtype=[("last", "<u8"), ("suppressed", "<u8"), ("remote", "<u4"), ("attr", "<u4")],
            count=n,
        )
        due = np.nonzero((st["suppressed"] > 0) & (now - st["last"].astype(np.int64) >= interval))[
            0
        ]
        out = []
        for i in due:
            key = L.DropKey.from_buffer_copy(keys, int(i) * ks)
            v = m.lookup_and_delete(key)
            if v is None or not v.suppressed:
                continue
            out.append(self._synthetic_drop(key, v, now))
        if not out:
            return _EMPTY_EVENTS
        return np.frombuffer(b"".join(bytes(e) for e in out), dtype=L.EVENT_DTYPE)

    def _synthetic_drop(self, key: L.DropKey, st: L.DropState, now: int) -> L.FlowEvent:
        t = key.tuple
        ev = L.FlowEvent(
            ts_ns=now,
            ifindex=t.ifindex,
            direction=t.direction,
            family=t.family,
            proto=t.proto,
            sport=t.sport,
            dport=t.dport,
            verdict=L.VERDICT_DROPPED,
            drop_reason=key.reason,
            reason=L.EV_DROP,
            suppressed=min(int(st.suppressed), 0xFFFFFFFF),
            attribution=st.attribution,
            flags=L.EVF_SYNTHETIC,
        )
        ev.saddr[:] = t.saddr
        ev.daddr[:] = t.daddr
        ep = self._map("endpoints").lookup(ctypes.c_uint32(t.ifindex))
        own = int(ep.identity) if ep is not None else 0
        ev.endpoint_id = int(ep.endpoint_id) if ep is not None else 0
        remote = int(st.remote_identity)
        ev.src_identity, ev.dst_identity = (
            (own, remote) if t.direction == L.DIR_EGRESS else (remote, own)
        )
        return ev

    # ------------------------------------------------------------ conntrack

    def conntrack(self) -> list[tuple[L.CtKey, L.CtEntry]]:
        return list(self._map("conntrack").items())

    def flush_conntrack(self, ifindex: int | None = None) -> int:
        """Delete conntrack entries (of one interface, or all); returns how many."""
        m = self._map("conntrack")
        n = 0
        for k in list(m.keys()):
            if (ifindex is None or int(k.ifindex) == ifindex) and m.delete(k):
                n += 1
        return n

    # ------------------------------------------------------------ testing

    def test_run(self, program: str, packet: bytes, ifindex: int = 1) -> int:
        """Run `program` ("from_pod" | "to_pod") on one Ethernet frame with
        BPF_PROG_TEST_RUN, as if it came through interface `ifindex` (which must
        exist in the caller's namespace). Returns the TC action (0 pass, 2 drop).
        Maps, conntrack and events are affected as for a real packet."""
        fd = self._p.progs[program]
        ctx = _skb_ctx(ifindex)
        return bpfsys.prog_test_run(fd, packet, ctx=ctx).retval


def _skb_ctx(ifindex: int) -> bytes:
    # struct __sk_buff: ifindex at offset 40 (len, pkt_type, mark, queue_mapping,
    # protocol, vlan_present, vlan_tci, vlan_proto, priority, ingress_ifindex, ifindex)
    buf = bytearray(192)
    buf[40:44] = ifindex.to_bytes(4, "little")
    return bytes(buf)


@contextlib.contextmanager
def opened(node_name: str, **kwargs: Any) -> Iterator[Datapath]:
    """Datapath.open + ensure_loaded, closed on exit (pins stay)."""
    dp = Datapath.open(node_name, **kwargs)
    try:
        dp.ensure_loaded()
        yield dp
    finally:
        dp.close()
