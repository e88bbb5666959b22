"""Hand-built protobuf encodings for the hot path of shipping.

A batch is assembled from flows that are already serialized (each flow is encoded
once, by the decoder), so building a sensilla.ingest.v1.Batch is a concatenation
instead of a message copy per flow. The encodings follow protobuf's wire format
exactly; tests parse them back with the generated classes.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from sensilla.protos import flow_pb2

_WT_VARINT = 0
_WT_LEN = 2


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _tag(field, _WT_LEN) + varint(len(payload)) + payload


def _varint_field(field: int, value: int) -> bytes:
    return _tag(field, _WT_VARINT) + varint(value) if value else b""


_FLOW_TAG = _tag(3, _WT_LEN)  # Batch.flows


def encode_batch(
    boot_id: int,
    sequence: int,
    flows: Iterable[bytes],
    lost_events: Iterable[flow_pb2.LostEvent] = (),
    created_ns: int = 0,
) -> bytes:
    """sensilla.ingest.v1.Batch from serialized flow.Flow messages."""
    parts = [_varint_field(1, boot_id), _varint_field(2, sequence)]
    for f in flows:
        parts.append(_FLOW_TAG)
        parts.append(varint(len(f)))
        parts.append(f)
    for lost in lost_events:
        parts.append(_len_field(4, lost.SerializeToString()))
    if created_ns:
        ts = Timestamp()
        ts.FromNanoseconds(created_ns)
        parts.append(_len_field(5, ts.SerializeToString()))
    return b"".join(parts)


def push_batch(batch: bytes) -> bytes:
    """sensilla.ingest.v1.PushRequest carrying an encoded Batch."""
    return _len_field(2, batch)


def push_hello(hello: bytes) -> bytes:
    """sensilla.ingest.v1.PushRequest carrying an encoded Hello."""
    return _len_field(1, hello)
