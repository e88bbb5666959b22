"""Hubble's `observe` filter flags for the Flows page, built into flow.FlowFilter
messages by the same builder `sensilla observe` uses
(:class:`sensilla.filters.hubble_cli.FlowFilterBuilder`, Hubble's semantics):

- a ``from-``/``to-`` flag (``from-pod``, ``to-ip``, …) constrains one end of the
  flow; flags without a side (``pod``, ``ip``, ``label``, ``identity``, ``port``,
  ``namespace``) match either end: the filter splits into a source-side and a
  destination-side filter, ORed;
- values of the same flag are ORed; different flags are ANDed;
- ``namespace`` flags qualify pod names given without a namespace, and alone they
  select every pod of the namespace (``x/`` prefixes);
- a negated flag (``--not`` on the command line, ``!value`` in the UI) goes to the
  blacklist instead, built the same way.

This module adds what a form needs: values checked before anything is sent (ports,
addresses, names of verdicts and reasons), errors that name the flag, the form's
``!value`` negation, and the equivalent command line.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sensilla.filters.hubble_cli import FlagError, FlowFilterBuilder
from sensilla.protos import flow_pb2

# Cilium's reserved identities (numbering as in Cilium).
RESERVED_IDENTITIES: dict[str, int] = {
    "host": 1,
    "world": 2,
    "unmanaged": 3,
    "health": 4,
    "init": 5,
    "remote-node": 6,
    "kube-apiserver": 7,
}

# Cilium monitor message types (`--type`).
EVENT_TYPES: dict[str, int] = {
    "drop": 1,
    "debug": 2,
    "capture": 3,
    "trace": 4,
    "policy-verdict": 5,
    "recorder": 6,
    "trace-sock": 7,
    "l7": 129,
    "agent": 130,
}

PROTOCOLS = ("tcp", "udp", "sctp", "icmpv4", "icmpv6")
_VERDICT_NAMES = flow_pb2.Verdict.DESCRIPTOR.values_by_name
_DROP_REASON_NAMES = flow_pb2.DropReason.DESCRIPTOR.values_by_name
VERDICTS = tuple(n for n in _VERDICT_NAMES if n != "VERDICT_UNKNOWN")
DROP_REASONS = tuple(n for n in _DROP_REASON_NAMES if n != "DROP_REASON_UNKNOWN")

FLAGS = (
    "from-pod", "to-pod", "pod",
    "from-namespace", "to-namespace", "namespace",
    "from-label", "to-label", "label",
    "from-ip", "to-ip", "ip",
    "from-identity", "to-identity", "identity",
    "from-port", "to-port", "port",
    "protocol", "verdict", "drop-reason-desc", "node-name", "type",
)  # fmt: skip

_DIGITS = re.compile(r"[0-9]{1,10}")


class FilterInputError(ValueError):
    """A filter value or combination that cannot be used; the message names the
    flag (the shared builder's messages, as Hubble's, name it themselves)."""

    def __init__(self, flag: str, message: str, *, named: bool = False) -> None:
        self.flag = flag
        super().__init__(message if named else f"--{flag}: {message}")


@dataclass(frozen=True)
class Condition:
    flag: str
    value: str
    negate: bool = False


def _number(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '¹', which int() refuses)."""
    return bool(_DIGITS.fullmatch(text))


def _check(flag: str, value: str) -> str:
    """The value as the builder wants it, or FilterInputError."""
    if not value:
        raise FilterInputError(flag, "empty value")
    if flag not in FLAGS:
        raise FilterInputError(flag, "unknown filter")
    if flag.endswith("port") and (not _number(value) or int(value) > 65535):
        raise FilterInputError(flag, f"{value!r} is not a port number (0-65535)")
    if flag.endswith("ip"):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise FilterInputError(flag, f"{value!r} is not an IP address or CIDR") from None
    if flag.endswith("identity"):
        v = value.lower().removeprefix("reserved:")
        if v not in RESERVED_IDENTITIES and not (_number(v) and int(v) < 2**32):
            raise FilterInputError(flag, f"{value!r} is not an identity (a number or one of "
                                         f"{', '.join(RESERVED_IDENTITIES)})")
        return v
    if flag == "verdict":
        if value.upper() not in _VERDICT_NAMES:
            raise FilterInputError(
                flag, f"unknown verdict {value!r} (one of {', '.join(VERDICTS)})")
        return value.upper()
    if flag == "drop-reason-desc":
        if value.upper() not in _DROP_REASON_NAMES:
            raise FilterInputError(flag, f"unknown drop reason {value!r}")
        return value.upper()
    if flag == "protocol":
        return value.lower()
    if flag == "type":
        head, _, sub = value.partition(":")
        if head not in EVENT_TYPES and not _number(head):
            raise FilterInputError(flag, f"unknown event type {value!r} "
                                         f"(one of {', '.join(EVENT_TYPES)} or a number)")
        if sub and not _number(sub):
            raise FilterInputError(flag, f"event sub-type {sub!r} must be a number")
    return value


def build(conditions: Iterable[Condition]) -> tuple[list[flow_pb2.FlowFilter],
                                                     list[flow_pb2.FlowFilter]]:
    """(whitelist, blacklist) for the conditions, in order, with Hubble's semantics."""
    builder = FlowFilterBuilder()
    for c in conditions:
        value = _check(c.flag, c.value.strip())
        try:
            if c.negate:
                builder.set("not")
            builder.set(c.flag, value)
        except FlagError as exc:
            raise FilterInputError(c.flag, str(exc), named=True) from None
    return builder.whitelist(), builder.blacklist()


def split_values(text: str) -> list[tuple[str, bool]]:
    """``"a, !b"`` → ``[("a", False), ("b", True)]``: comma-separated values, ``!``
    negates one value (``--not``)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        negate = part.startswith("!")
        value = part[1:].strip() if negate else part
        if value:
            out.append((value, negate))
    return out


def conditions_from_form(fields: dict[str, str], choices: dict[str, tuple[list[str], bool]]
                         ) -> list[Condition]:
    """Conditions from the Flows page's form: ``fields`` maps a flag to a text of
    comma-separated values (``!`` negates a value); ``choices`` maps a flag to
    (selected values, negate all)."""
    out: list[Condition] = []
    for flag in FLAGS:
        if fields.get(flag):
            out.extend(Condition(flag, v, neg) for v, neg in split_values(fields[flag]))
        if flag in choices:
            values, negate = choices[flag]
            out.extend(Condition(flag, v, negate) for v in values)
    return out


def observe_command(conditions: Iterable[Condition], *, extra: Sequence[str] = ()) -> str:
    """The ``sensilla observe`` command line with the same filters."""
    words = ["sensilla", "observe"]
    for c in conditions:
        if c.negate:
            words.append("--not")
        words += [f"--{c.flag}", c.value]
    words += list(extra)
    return " ".join(shlex.quote(w) for w in words)
