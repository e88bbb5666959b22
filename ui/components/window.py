"""The time window shared by the pages (chosen in the sidebar)."""

from __future__ import annotations

import streamlit as st

from ui.data import TimeRange

WINDOWS: dict[str, int] = {
    "Last 5 minutes": 5 * 60,
    "Last 15 minutes": 15 * 60,
    "Last hour": 3600,
    "Last 6 hours": 6 * 3600,
    "Last 24 hours": 24 * 3600,
    "Last 7 days": 7 * 24 * 3600,
}
# The same windows as `sensilla observe --since` durations.
SINCE: dict[str, str] = {
    "Last 5 minutes": "5m",
    "Last 15 minutes": "15m",
    "Last hour": "1h",
    "Last 6 hours": "6h",
    "Last 24 hours": "24h",
    "Last 7 days": "168h",
}
DEFAULT_WINDOW = "Last hour"
KEY = "window"


def sidebar_picker() -> None:
    """The window selector (rendered once, by ui/app.py, before the page runs)."""
    st.sidebar.selectbox("Time window", list(WINDOWS), index=list(WINDOWS).index(DEFAULT_WINDOW),
                         key=KEY)


def label() -> str:
    value = st.session_state.get(KEY, DEFAULT_WINDOW)
    return value if value in WINDOWS else DEFAULT_WINDOW


def current() -> TimeRange:
    """The chosen window, ending now."""
    return TimeRange.last(WINDOWS[label()])


def describe() -> str:
    return label().lower()


def since_flag() -> str:
    return SINCE[label()]
