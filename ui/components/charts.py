"""Small plotly figures shared by the pages (time series of relay aggregates)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import plotly.graph_objects as go

from ui.components.graph import OTHER_COLOR, VERDICT_COLORS
from ui.data import TimeRange

REASON_PALETTE = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                  "#ff7f0e", "#1f77b4", "#7f7f7f", "#2ca02c"]


def complete_series(frame: pd.DataFrame, key: str, value: str, *, step_seconds: int = 0,
                    since: datetime | None = None, until: datetime | None = None
                    ) -> pd.DataFrame:
    """Wide frame time × key with every bucket of the window present and missing
    ones as 0 (the relay omits empty buckets; lines must drop to zero there rather
    than interpolate)."""
    if frame.empty:
        return pd.DataFrame()
    wide = frame.pivot_table(index="time", columns=key, values=value, aggfunc="first")
    if step_seconds > 0:
        first = min(wide.index.min(), since) if since is not None else wide.index.min()
        last = max(wide.index.max(), until) if until is not None else wide.index.max()
        start = _floor(first, step_seconds)
        buckets = pd.date_range(start, last, freq=f"{step_seconds}s")
        if len(buckets) <= 20_000:
            wide = wide.reindex(wide.index.union(buckets))
    return wide.fillna(0.0).sort_index()


def _floor(when: datetime, step: int) -> datetime:
    epoch = when.timestamp()
    return datetime.fromtimestamp(epoch - epoch % step, UTC)


def verdict_rates(frame: pd.DataFrame, *, title: str, only: str | None = None,
                  step_seconds: int = 0, span: TimeRange | None = None) -> go.Figure:
    data = frame if only is None else frame[frame["verdict"] == only]
    wide = complete_series(data, "verdict", "per_second", step_seconds=step_seconds,
                           since=span.since if span else None,
                           until=span.until if span else None)
    fig = go.Figure()
    for verdict in wide.columns:
        fig.add_trace(go.Scatter(
            x=wide.index, y=wide[verdict], mode="lines", name=str(verdict).lower(),
            line={"color": VERDICT_COLORS.get(str(verdict), OTHER_COLOR), "width": 2},
            fill="tozeroy" if only else None,
            hovertemplate="%{y:.2f}/s<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(title={"text": title, "font": {"size": 15}}, height=300,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"title": "per second", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def reasons_over_time(frame: pd.DataFrame, *, title: str, step_seconds: int = 0,
                      span: TimeRange | None = None) -> go.Figure:
    wide = complete_series(frame, "reason", "drops", step_seconds=step_seconds,
                           since=span.since if span else None,
                           until=span.until if span else None)
    fig = go.Figure()
    for i, reason in enumerate(wide.columns):
        fig.add_trace(go.Bar(x=wide.index, y=wide[reason], name=str(reason),
                             marker_color=REASON_PALETTE[i % len(REASON_PALETTE)]))
    fig.update_layout(barmode="stack", title={"text": title, "font": {"size": 15}}, height=320,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"title": "drops per bucket"},
                      legend={"orientation": "h", "y": -0.2})
    return fig


def reason_totals(frame: pd.DataFrame) -> pd.DataFrame:
    """Drops per reason over the window, largest first (summing the relay's
    per-bucket counts)."""
    if frame.empty:
        return pd.DataFrame(columns=["reason", "drops"])
    totals = frame.groupby("reason", as_index=False)["drops"].sum()
    return totals.sort_values(["drops", "reason"], ascending=[False, True]).reset_index(drop=True)


def top_reasons(totals: pd.DataFrame, *, title: str) -> go.Figure:
    data = totals.iloc[::-1]
    fig = go.Figure(go.Bar(x=data["drops"], y=data["reason"], orientation="h",
                           marker_color="#d62728", text=data["drops"], textposition="auto"))
    fig.update_layout(title={"text": title, "font": {"size": 15}},
                      height=max(200, 60 + 34 * len(data)),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis={"title": "drops"})
    return fig
