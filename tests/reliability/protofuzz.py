"""Hypothesis strategies for any protobuf message, from its descriptor: every field
with values of its type (edge values, hostile strings, enum numbers nobody defined,
nested messages, `google.protobuf.Any` holding Sensilla's extension types or junk),
and byte-level mutations of serialized messages (flips, cuts, insertions, unknown
fields) for what a peer could send on the wire."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from sensilla.protos import extensions_pb2

FD = descriptor.FieldDescriptor

# strings that exercise parsers: selectors, CIDRs, names, regex and SQL metacharacters
HOSTILE = (
    "",
    " ",
    "x/a",
    "x/",
    "/a",
    "k8s:app=web",
    "app in (a, b)",
    "!app",
    "app notin (x)",
    "a=b,c!=d",
    "reserved:world",
    "10.0.0.0/8",
    "10.0.0.1",
    "fd00::/64",
    "::1",
    "300.1.1.1",
    "10.0.0.0/33",
    "*",
    "*.example.com",
    "node-*",
    "(?i)abc",
    "[",
    "\\",
    "'; DROP TABLE flows; --",
    "%(x)s",
    "{x:String}",
    "\x00",
    "é\u202e\U0001f600",
    "\ud7ff",
    "a" * 1100,
    "TCP",
    "udp",
    "DROPPED",
    "POLICY_DENIED",
    "1h",
    "2006-01-02T15:04:05Z",
    "-1",
    "18446744073709551616",
)
INT_EDGES = (0, 1, -1, 2, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, -(2**31), 2**32 - 1)

_INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (*INT_EDGES, lo, hi) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _scalar(field: Any) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_RANGES:
        return _int(*_INT_RANGES[t])
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return st.floats(allow_nan=True, width=32 if t == FD.TYPE_FLOAT else 64)
    if t == FD.TYPE_STRING:
        return text()
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # open enums: numbers nobody defined are legal on the wire
        return st.one_of(st.sampled_from(known), _int(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field type {t}")


# Any payloads worth trying in `extensions` fields
_ANY_TYPES: tuple[type[Message], ...] = (
    extensions_pb2.ResumeRequest,
    extensions_pb2.FlowExtension,
    extensions_pb2.StreamPosition,
)


def _any(depth: int) -> st.SearchStrategy[any_pb2.Any]:
    @st.composite
    def build(draw: st.DrawFn) -> any_pb2.Any:
        a = any_pb2.Any()
        kind = draw(st.integers(0, 3))
        if kind <= 1:
            cls = draw(st.sampled_from(_ANY_TYPES))
            a.Pack(draw(messages(cls, depth + 1)))
        elif kind == 2:
            a.type_url = draw(text())
            a.value = draw(st.binary(max_size=64))
        else:
            cls = draw(st.sampled_from(_ANY_TYPES))
            a.type_url = "type.googleapis.com/" + cls.DESCRIPTOR.full_name
            a.value = draw(st.binary(max_size=64))
        return a

    return build()


def messages(cls: type[Message], depth: int = 0, max_depth: int = 2) -> st.SearchStrategy[Any]:
    """Messages of `cls` with a random subset of fields set (recursively)."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        if cls.DESCRIPTOR.full_name == "google.protobuf.Any":
            return draw(_any(depth))
        fields = list(cls.DESCRIPTOR.fields)
        if not fields:
            return msg
        chosen = draw(st.lists(st.sampled_from(fields), max_size=min(6, len(fields)), unique_by=id))
        for f in chosen:
            _set(draw, msg, f, depth, max_depth)
        return msg

    return build()


def _set(draw: st.DrawFn, msg: Message, f: Any, depth: int, max_depth: int) -> None:
    is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
    repeated = f.is_repeated
    if f.type == FD.TYPE_MESSAGE:
        if depth >= max_depth and not is_map:
            return
        if is_map:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            container = getattr(msg, f.name)
            for _ in range(draw(st.integers(0, 3))):
                k = draw(_scalar(kf))
                if vf.type == FD.TYPE_MESSAGE:
                    value = draw(messages(vf.message_type._concrete_class, depth + 1))
                    container[k].CopyFrom(value)
                else:
                    container[k] = draw(_scalar(vf))
            return
        sub = f.message_type._concrete_class
        if repeated:
            for m in draw(st.lists(messages(sub, depth + 1, max_depth), max_size=3)):
                getattr(msg, f.name).add().CopyFrom(m)
        else:
            getattr(msg, f.name).CopyFrom(draw(messages(sub, depth + 1, max_depth)))
        return
    if repeated:
        getattr(msg, f.name).extend(draw(st.lists(_scalar(f), max_size=4)))
    else:
        setattr(msg, f.name, draw(_scalar(f)))


def mutate(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of a serialized message."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.integers(0, 4))
            if op == 0 and buf:  # flip a byte
                i = draw(st.integers(0, len(buf) - 1))
                buf[i] = draw(st.integers(0, 255))
            elif op == 1 and buf:  # cut
                buf = buf[: draw(st.integers(0, len(buf)))]
            elif op == 2:  # insert junk
                i = draw(st.integers(0, len(buf)))
                buf[i:i] = draw(st.binary(min_size=1, max_size=16))
            elif op == 3:  # an unknown field (number 1..2^29-1, any wire type)
                number = draw(st.one_of(st.integers(1, 40), st.integers(1, 2**29 - 1)))
                wire = draw(st.sampled_from([0, 1, 2, 5]))
                buf += _varint((number << 3) | wire)
                if wire == 0:
                    buf += _varint(draw(st.integers(0, 2**64 - 1)))
                elif wire == 1:
                    buf += draw(st.binary(min_size=8, max_size=8))
                elif wire == 5:
                    buf += draw(st.binary(min_size=4, max_size=4))
                else:
                    payload = draw(st.binary(max_size=32))
                    buf += _varint(len(payload)) + payload
            else:  # a huge declared length
                buf += b"\x0a" + _varint(draw(st.integers(2**20, 2**31)))
        return bytes(buf)

    return build()


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def wire_inputs(cls: type[Message]) -> st.SearchStrategy[bytes]:
    """What a client could send for `cls`: a well-formed random message, a mutated
    one, or plain random bytes."""
    valid = messages(cls).map(lambda m: m.SerializeToString())
    return st.one_of(
        valid,
        valid.flatmap(mutate),
        st.binary(max_size=200),
    )
