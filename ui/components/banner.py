"""Honest empty and error states: banners instead of tracebacks."""

from __future__ import annotations

import logging

import streamlit as st

from ui.data import RelayError

log = logging.getLogger("sensilla.ui")


def relay_error(err: RelayError) -> None:
    """A clear banner for a failed relay call."""
    body = f"**{err.title}**\n\n{err.message}\n\n{err.hint}"
    if err.method:
        body += f"\n\n(call: `{err.method}`{f', status {err.code}' if err.code else ''})"
    if err.kind in ("invalid", "busy"):
        st.warning(body, icon=":material/warning:")
    else:
        st.error(body, icon=":material/cloud_off:" if err.kind == "unavailable"
                 else ":material/error:")


def no_data(what: str, hint: str = "") -> None:
    """An empty answer: say so, and what might change it."""
    st.info(f"**No data:** {what}" + (f"\n\n{hint}" if hint else ""), icon=":material/info:")


def ui_failure(exc: BaseException) -> None:
    """An unexpected failure inside the UI itself: a banner, the details in the log."""
    log.exception("page failed", exc_info=exc)
    st.error(
        "**The page failed to render.** This is a bug in the Sensilla UI, not in your "
        f"cluster. {type(exc).__name__}: {exc}\n\nThe UI's log has the details.",
        icon=":material/bug_report:",
    )
