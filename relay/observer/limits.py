"""Limits of the relay's read APIs, and request validation shared by its services.

Violations are the client's to fix: INVALID_ARGUMENT (too many filters, a page or
an edge count over the maximum, an over-long value) or RESOURCE_EXHAUSTED (too many
concurrent followers for one client, or in all), each with a message naming the
field and the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from sensilla.filters.fieldmask import unknown_flow_path


@dataclass(frozen=True)
class Limits:
    max_filters: int = 64  # whitelist + blacklist entries per request
    max_page_size: int = 1000  # SearchFlows.page_size
    default_page_size: int = 100
    max_followers_per_client: int = 16  # concurrent GetFlows follow streams per peer host
    max_followers: int = 512  # in all
    follower_queue_flows: int = 20_000  # flows queued per follower before it loses some
    max_edges: int = 5000  # ServiceMap.max_edges
    default_edges: int = 500
    max_pairs: int = 100  # DropSummary.limit
    default_pairs: int = 20
    max_namespaces: int = 1000  # namespaces per request
    max_text: int = 1024  # bytes in one request string (workload ids, pod names, tokens)
    max_points: int = 10_000  # time buckets per rates/drops answer

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name} must be a positive integer")
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size exceeds max_page_size")
        if self.default_edges > self.max_edges or self.default_pairs > self.max_pairs:
            raise ValueError("a default exceeds its maximum")


class RequestError(Exception):
    """A request the relay refuses; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def exhausted(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def check_filters(limits: Limits, whitelist: Any, blacklist: Any) -> None:
    n = len(whitelist) + len(blacklist)
    if n > limits.max_filters:
        raise invalid(f"whitelist/blacklist: {n} filters; at most {limits.max_filters} per request")


def check_text(limits: Limits, field: str, value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > limits.max_text:
        raise invalid(f"{field}: longer than {limits.max_text} bytes")
    if "\x00" in value:
        raise invalid(f"{field}: contains a NUL character")
    return value


def check_namespaces(limits: Limits, field: str, values: Any) -> list[str]:
    if len(values) > limits.max_namespaces:
        raise invalid(f"{field}: {len(values)} namespaces; at most {limits.max_namespaces}")
    return [check_text(limits, f"{field}[{i}]", v) for i, v in enumerate(values)]


def check_field_mask(mask: field_mask_pb2.FieldMask) -> None:
    unknown = unknown_flow_path(mask.paths)
    if unknown is not None:
        i, path = unknown
        raise invalid(f"field_mask.paths[{i}]: unknown flow field path {path!r}")
