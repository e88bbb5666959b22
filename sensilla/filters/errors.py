"""The one error type of the filter module."""

from __future__ import annotations


class FilterError(ValueError):
    """A filter value that cannot be compiled.

    ``field`` names the offending value as a path into the request, for example
    ``whitelist[0].source_ip[1]``; servers return ``str(error)`` with the gRPC status
    INVALID_ARGUMENT.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)
