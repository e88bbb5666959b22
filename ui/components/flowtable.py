"""The Hubble-like flows table (time, source, destination, port and protocol,
verdict, drop reason, TCP flags, node)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from sensilla.protos import flow_pb2
from ui.components import flowfmt
from ui.components.graph import VERDICT_COLORS


def _verdict_style(value: Any) -> str:
    color = VERDICT_COLORS.get(str(value))
    return f"color: {color}; font-weight: 600" if color else ""


def frame(flows: Sequence[flow_pb2.Flow]) -> pd.DataFrame:
    return flowfmt.flows_frame(flows)


def render(table: pd.DataFrame, *, key: str, height: int | None = None,
           selectable: bool = False) -> Any:
    """Draw the table (newest first as given). Returns the selection state when
    ``selectable``."""
    shown = table[flowfmt.TABLE_COLUMNS]
    styled = shown.style.map(_verdict_style, subset=["verdict"])
    config = {
        "time": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss.SSS"),
        **{c: flowfmt.TABLE_LABELS[c] for c in flowfmt.TABLE_COLUMNS if c != "time"},
    }
    kwargs: dict[str, Any] = {"hide_index": True, "column_config": config, "key": key}
    if height:
        kwargs["height"] = height
    if selectable:
        kwargs["on_select"] = "rerun"
        kwargs["selection_mode"] = "single-row"
    return st.dataframe(styled, **kwargs)
