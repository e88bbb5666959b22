"""Network-namespace plumbing for the lab: create, enter, configure, delete.

Links, addresses and routes go through pyroute2 (netlink). Sockets and sysctls are
opened inside a namespace by switching the calling thread with setns(2) and back:
an open socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import NetNS, netns

NETNS_DIR = Path("/var/run/netns")
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with the calling thread inside network namespace `name`
    (None: stay where we are)."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(str(NETNS_DIR / name), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str) -> None:
    netns.create(name)


def delete(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


def list_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def sysctl(ns: str | None, key: str, value: str | int) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    with entered(ns), open(path, "w") as f:
        f.write(str(value))


@contextlib.contextmanager
def ipr(ns: str | None) -> Iterator[NetNS]:
    """A netlink socket in namespace `ns` (the root namespace when None)."""
    if ns is None:
        from pyroute2 import IPRoute

        with IPRoute() as root:
            yield root
        return
    handle = NetNS(ns)
    try:
        yield handle
    finally:
        handle.close()


def link_index(handle: NetNS, ifname: str) -> int:
    found = handle.link_lookup(ifname=ifname)
    if not found:
        raise LookupError(f"no interface {ifname}")
    return int(found[0])


def add_address(handle: NetNS, index: int, address: str, prefixlen: int) -> None:
    try:
        handle.addr(
            "add", index=index, address=address, prefixlen=prefixlen, flags=IFA_F_NODAD
        )
    except Exception as exc:  # pyroute2 raises NetlinkError
        if getattr(exc, "code", None) != errno.EEXIST:
            raise


def set_up(handle: NetNS, index: int) -> None:
    handle.link("set", index=index, state="up")
