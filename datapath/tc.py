"""Attach and detach the TC programs with pyroute2 (clsact, direct-action).

Works in any network namespace: `netns=None` is the caller's namespace,
otherwise the name of a namespace under /var/run/netns (pyroute2 opens its
netlink socket there; the program file descriptors stay ours).

Our filters carry the name `sensilla:<node>:<program>:<prog id>`, at prio 1,
handle 1, protocol all. A hook that already holds any other filter is refused.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

PARENT_INGRESS = 0xFFFFFFF2  # clsact ingress: packets the pod sends (from_pod)
PARENT_EGRESS = 0xFFFFFFF3  # clsact egress: packets towards the pod (to_pod)
HOOKS = (("ingress", PARENT_INGRESS, "from_pod"), ("egress", PARENT_EGRESS, "to_pod"))
PRIO = 1
HANDLE = 1


class HookBusyError(RuntimeError):
    """Another program (not ours) holds a TC hook of the device."""


@dataclass(frozen=True)
class TcFilter:
    hook: str  # "ingress" | "egress"
    kind: str
    name: str
    prio: int
    handle: int


@contextlib.contextmanager
def netlink(netns: str | None) -> Iterator[IPRoute]:
    ipr = NetNS(netns, flags=0) if netns else IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def resolve(ipr: IPRoute, dev: int | str) -> int:
    """An interface index from an index or a name (in the socket's namespace)."""
    if isinstance(dev, int):
        if not ipr.link("get", index=dev):
            raise LookupError(f"no interface with index {dev}")
        return dev
    found = ipr.link_lookup(ifname=dev)
    if not found:
        raise LookupError(f"no interface named {dev!r}")
    return int(found[0])


def filter_name(node: str, program: str, prog_id: int) -> str:
    return f"sensilla:{node}:{program}:{prog_id}"


def _filters(ipr: IPRoute, ifindex: int, hook: str, parent: int) -> list[TcFilter]:
    out = []
    try:
        msgs = ipr.get_filters(index=ifindex, parent=parent)
    except NetlinkError as exc:
        if exc.code in (errno.EINVAL, errno.ENOENT, errno.ENODEV):
            return []  # no clsact qdisc, or the device is gone
        raise
    for m in msgs:
        opts = m.get_attr("TCA_OPTIONS")
        if opts is None:
            continue  # the per-prio chain header
        name = opts.get_attr("TCA_BPF_NAME") if m.get_attr("TCA_KIND") == "bpf" else None
        info = int(m["info"])
        out.append(
            TcFilter(hook, str(m.get_attr("TCA_KIND")), name or "", info >> 16, int(m["handle"]))
        )
    return out


def list_filters(ipr: IPRoute, ifindex: int) -> list[TcFilter]:
    return [f for hook, parent, _ in HOOKS for f in _filters(ipr, ifindex, hook, parent)]


def has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


def attach(ipr: IPRoute, ifindex: int, node: str, progs: dict[str, tuple[int, int]]) -> bool:
    """Attach `progs` (program name -> (fd, prog id)) to both hooks of `ifindex`.
    Returns True if anything changed. Raises HookBusyError if a foreign filter
    holds a hook; nothing is changed then."""
    ours_prefix = f"sensilla:{node}:"
    present: dict[str, TcFilter] = {}
    for f in list_filters(ipr, ifindex):
        if f.name.startswith(ours_prefix) and f.prio == PRIO and f.handle == HANDLE:
            present[f.hook] = f
        else:
            who = f.name or f.kind
            raise HookBusyError(
                f"interface {ifindex}: TC {f.hook} hook already holds {who!r} "
                f"(prio {f.prio}, handle {f.handle}); refusing to attach next to it"
            )
    if not has_clsact(ipr, ifindex):
        try:
            ipr.tc("add", "clsact", index=ifindex)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    changed = False
    for hook, parent, program in HOOKS:
        fd, prog_id = progs[program]
        name = filter_name(node, program, prog_id)
        if hook in present and present[hook].name == name:
            continue
        ipr.tc(
            "replace-filter",
            "bpf",
            index=ifindex,
            handle=HANDLE,
            prio=PRIO,
            parent=parent,
            fd=fd,
            name=name,
            classid=1,
            direct_action=True,
        )
        changed = True
    return changed


def detach(ipr: IPRoute, ifindex: int, node: str) -> bool:
    """Remove our filters from `ifindex`; remove the clsact qdisc when no filter
    is left on it. Returns True if anything was removed. A missing device is
    not an error (its filters went with it)."""
    ours_prefix = f"sensilla:{node}:"
    removed = False
    try:
        filters = list_filters(ipr, ifindex)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    for f in filters:
        if not f.name.startswith(ours_prefix):
            continue
        parent = PARENT_INGRESS if f.hook == "ingress" else PARENT_EGRESS
        _ignore_missing(
            lambda p=parent, f=f: ipr.tc(
                "del-filter", "bpf", index=ifindex, handle=f.handle, prio=f.prio, parent=p
            )
        )
        removed = True
    if removed and not list_filters(ipr, ifindex) and _safe_has_clsact(ipr, ifindex):
        _ignore_missing(lambda: ipr.tc("del", "clsact", index=ifindex))
    return removed


def _safe_has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    try:
        return has_clsact(ipr, ifindex)
    except NetlinkError:
        return False


def _ignore_missing(fn: Any) -> None:
    try:
        fn()
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            raise


def interfaces_with_our_filters(ipr: IPRoute, node: str) -> list[int]:
    """Every interface of the namespace that carries one of our filters."""
    out = []
    for link in ipr.get_links():
        idx = int(link["index"])
        try:
            if any(f.name.startswith(f"sensilla:{node}:") for f in list_filters(ipr, idx)):
                out.append(idx)
        except NetlinkError:
            continue
    return out
