"""Hubble's time formats (``--time-format``), rendered in UTC as Go's time.Format."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

FORMAT_NAMES = (
    "StampMilli",
    "YearMonthDay",
    "YearMonthDayHour",
    "YearMonthDayHourMinute",
    "RFC3339",
    "RFC3339Milli",
    "RFC3339Micro",
    "RFC3339Nano",
    "RFC1123Z",
)

_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def canonical_format_name(name: str) -> str:
    """Hubble's FormatNameToLayout: case-insensitive, unknown names mean StampMilli."""
    for known in FORMAT_NAMES:
        if known.lower() == name.lower():
            return known
    return "StampMilli"


def _fraction(nanos: int, digits: int) -> str:
    """Go's ".999..." layout element: up to ``digits`` digits, trailing zeros dropped."""
    text = f"{nanos:09d}"[:digits].rstrip("0")
    return f".{text}" if text else ""


def format_timestamp(ts: timestamp_pb2.Timestamp | None, name: str = "StampMilli") -> str:
    """A protobuf Timestamp as Hubble prints it; "N/A" when missing or invalid."""
    if ts is None or not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 10**9):
        return "N/A"
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ts.seconds)
    nanos = ts.nanos
    date = f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    hms = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    name = canonical_format_name(name)
    if name == "StampMilli":
        return f"{_MONTHS[t.month - 1]} {t.day:>2} {hms}.{nanos // 1_000_000:03d}"
    if name == "YearMonthDay":
        return date
    if name == "YearMonthDayHour":
        return f"{date}T{t.hour:02d}Z"
    if name == "YearMonthDayHourMinute":
        return f"{date}T{t.hour:02d}:{t.minute:02d}Z"
    if name == "RFC3339":
        return f"{date}T{hms}Z"
    if name == "RFC3339Milli":
        return f"{date}T{hms}{_fraction(nanos, 3)}Z"
    if name == "RFC3339Micro":
        return f"{date}T{hms}{_fraction(nanos, 6)}Z"
    if name == "RFC3339Nano":
        return f"{date}T{hms}{_fraction(nanos, 9)}Z"
    # RFC1123Z
    return f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} {hms} +0000"
