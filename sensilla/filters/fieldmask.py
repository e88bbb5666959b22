"""Field masks over Flow: GetFlowsRequest.field_mask (relay and collector Observers,
resumable streams) and the exporters' field lists. Which paths name a Flow field, and a
flow cut down to a mask."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import field_mask_pb2

from sensilla.protos import flow_pb2


def valid_flow_path(path: str) -> bool:
    """True when each dotted part names a field of the message before it, from Flow."""
    descriptor: Any = flow_pb2.Flow.DESCRIPTOR
    for part in path.split("."):
        field = descriptor.fields_by_name.get(part) if descriptor is not None else None
        if field is None:
            return False
        descriptor = field.message_type
    return True


def unknown_flow_path(paths: Iterable[str]) -> tuple[int, str] | None:
    """The index and text of the first path that names no Flow field, or None."""
    for i, path in enumerate(paths):
        if not valid_flow_path(path):
            return i, path
    return None


def masked_flow(flow: flow_pb2.Flow, mask: field_mask_pb2.FieldMask | None) -> flow_pb2.Flow:
    """The flow with only the mask's fields (the flow itself when there is no mask)."""
    if mask is None:
        return flow
    out = flow_pb2.Flow()
    mask.MergeMessage(flow, out)
    return out
