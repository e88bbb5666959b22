"""Validation of enum values in filters: only numbers the enum defines are accepted."""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from sensilla.filters.errors import FilterError


def check_enum(
    values: list[int], enum: EnumTypeWrapper, what: str, field: str, path: str
) -> list[int]:
    known = set(enum.values())
    for i, value in enumerate(values):
        if value not in known:
            raise FilterError(f"{path}.{field}[{i}]", f"unknown {what} {value}")
    return list(dict.fromkeys(values))
