"""source_ip / destination_ip: exact addresses or CIDR ranges (Hubble's IPFilter).

Semantics as Hubble's (Go net package):
- a value without "/" must be an IP address and matches the flow's address string
  exactly (string equality, as Hubble compares it);
- a value with "/" is a CIDR (host bits allowed, "10.1.2.3/8" is 10.0.0.0/8) and
  matches flow addresses inside it. IPv4 addresses (and their IPv4-mapped IPv6 forms)
  only match IPv4 ranges (an IPv6 range inside ::ffff:0:0/96 is an IPv4 range); other
  IPv6 addresses only match IPv6 ranges;
- a flow without a (parseable) address matches nothing.

SQL runs on the ``src_ip_hi``/``src_ip_lo`` columns: the address as 128 bits,
IPv4 stored IPv4-mapped, unparseable addresses stored as ``src_ip = ''``.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from sensilla.filters.base import Clause
from sensilla.filters.errors import FilterError
from sensilla.filters.sql import Params, all_of, any_of, col
from sensilla.protos import flow_pb2

FIELDS = ("source_ip", "destination_ip")

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED_LO_MIN = 0xFFFF << 32
_MAPPED_LO_MAX = (0xFFFF << 32) | 0xFFFFFFFF
_MAPPED_NET = ipaddress.IPv6Network("::ffff:0:0/96")
_PREFIX_RE = re.compile(r"[0-9]{1,3}")


@functools.lru_cache(maxsize=65536)
def parse_address(text: str) -> IPAddr | None:
    """An address as Go's net.ParseIP reads it (no zones, no leading-zero octets);
    IPv4-mapped IPv6 addresses come back as IPv4, as Go's To4() sees them."""
    if not text or "%" in text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_cidr(text: str) -> IPNet | None:
    """A CIDR as Go's net.ParseCIDR reads it (decimal prefix length only)."""
    addr_text, _, prefix = text.partition("/")
    if not _PREFIX_RE.fullmatch(prefix) or "%" in addr_text:
        return None
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        return None
    try:
        net = ipaddress.ip_network(f"{addr}/{int(prefix)}", strict=False)
    except ValueError:
        return None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None:
        # Go treats a network whose address is IPv4-mapped as an IPv4 network.
        return ipaddress.IPv4Network(
            (net.network_address.ipv4_mapped, net.prefixlen - 96), strict=False
        )
    return net


@functools.lru_cache(maxsize=65536)
def address_halves(text: str) -> tuple[str, int, int]:
    """(canonical column string, hi, lo) for an address: the string as given when it
    parses (else ""), and the address as 128 bits with IPv4 mapped."""
    addr = parse_address(text)
    if addr is None:
        return "", 0, 0
    if isinstance(addr, ipaddress.IPv4Address):
        return text, 0, _MAPPED_LO_MIN | int(addr)
    value = int(addr)
    return text, value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _net_sql(net: IPNet, side: str, params: Params) -> str:
    hi_col, lo_col, ip_col = col(f"{side}_ip_hi"), col(f"{side}_ip_lo"), col(f"{side}_ip")
    if isinstance(net, ipaddress.IPv4Network):
        first = _MAPPED_LO_MIN | int(net.network_address)
        last = _MAPPED_LO_MIN | int(net.broadcast_address)
        return all_of(
            [
                f"{hi_col} = 0",
                f"{lo_col} >= {params.add('UInt64', first)}",
                f"{lo_col} <= {params.add('UInt64', last)}",
            ]
        )
    first6, last6 = int(net.network_address), int(net.broadcast_address)
    mask64 = 0xFFFFFFFFFFFFFFFF
    parts = [f"{ip_col} != ''"]
    if first6 >> 64 == last6 >> 64:
        parts += [
            f"{hi_col} = {params.add('UInt64', first6 >> 64)}",
            f"{lo_col} >= {params.add('UInt64', first6 & mask64)}",
            f"{lo_col} <= {params.add('UInt64', last6 & mask64)}",
        ]
    else:
        parts += [
            f"{hi_col} >= {params.add('UInt64', first6 >> 64)}",
            f"{hi_col} <= {params.add('UInt64', last6 >> 64)}",
        ]
    if net.supernet_of(_MAPPED_NET):
        parts.append(
            f"NOT ({hi_col} = 0 AND {lo_col} >= {_MAPPED_LO_MIN} AND {lo_col} <= {_MAPPED_LO_MAX})"
        )
    return all_of(parts)


def _compile_values(values: list[str], field: str, path: str, side: str, params: Params) -> Clause:
    exact: list[str] = []
    nets: list[IPNet] = []
    for i, value in enumerate(values):
        if "/" in value:
            net = parse_cidr(value)
            if net is None:
                raise FilterError(f"{path}.{field}[{i}]", f"invalid CIDR in filter: {value!r}")
            nets.append(net)
        else:
            if parse_address(value) is None:
                raise FilterError(
                    f"{path}.{field}[{i}]", f"invalid IP address in filter: {value!r}"
                )
            exact.append(value)
    exact_set = frozenset(exact)
    v4 = tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network))
    v6 = tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network))
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        text = flow.IP.source if source else flow.IP.destination
        if not text:
            return False
        if text in exact_set:
            return True
        if nets:
            addr = parse_address(text)
            if addr is None:
                return False
            if isinstance(addr, ipaddress.IPv4Address):
                return any(addr in n for n in v4)
            return any(addr in n for n in v6)
        return False

    ip_col = col(f"{side}_ip")
    parts = [f"{ip_col} = {params.add('String', v)}" for v in dict.fromkeys(exact)]
    parts += [_net_sql(n, side, params) for n in dict.fromkeys(nets)]
    return Clause(field, match, any_of(parts))


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_ip:
        out.append(_compile_values(list(ff.source_ip), "source_ip", path, "src", params))
    if ff.destination_ip:
        out.append(_compile_values(list(ff.destination_ip), "destination_ip", path, "dst", params))
    return out
