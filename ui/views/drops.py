"""Drops: reasons over time, top dropped pairs with the denying policy (or default
deny), and pairs that started dropping recently."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import data
from ui.components import banner, charts, window

st.header("Drops")
span = window.current()

try:
    all_namespaces = data.namespaces()
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

chosen = st.session_state.get("dr_namespaces", [])
namespaces = st.multiselect("Namespaces", sorted(set(all_namespaces) | set(chosen)),
                            key="dr_namespaces", placeholder="All namespaces")

try:
    summary = data.drop_summary(span, namespaces, step_seconds=data.default_step(span),
                                limit=25)
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

if summary.reasons.empty and summary.top_pairs.empty:
    where = f" in {', '.join(namespaces)}" if namespaces else ""
    st.success(f"No drops in the {window.describe()}{where}.", icon=":material/check_circle:")
    st.stop()

if not summary.reasons.empty:
    st.plotly_chart(charts.reasons_over_time(summary.reasons, title="Drop reasons over time",
                                             step_seconds=summary.step_seconds, span=span),
                    key="dr_reasons")

PAIR_COLUMNS = {
    "source": "Source",
    "destination": "Destination",
    "port": "Port/Protocol",
    "reason": "Reason",
    "drops": "Drops",
    "denied_by": "Denied by",
    "first_seen": "First drop (UTC)",
    "last_seen": "Last drop (UTC)",
}


def pairs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The pairs as a small static table (at most the relay's top N rows)."""
    out = frame.copy()
    out["port"] = [f"{p}/{proto}" if p else proto for p, proto in
                   zip(out["port"], out["protocol"], strict=True)]
    out["drops"] = [f"{int(n):,}" for n in out["drops"]]
    for col in ("first_seen", "last_seen"):
        out[col] = [t.strftime("%Y-%m-%d %H:%M:%S") if t is not None and not pd.isna(t) else ""
                    for t in out[col]]
    return out[list(PAIR_COLUMNS)].rename(columns=PAIR_COLUMNS)


st.subheader("Top dropped pairs")
if summary.top_pairs.empty:
    banner.no_data("no dropped pair in the window.")
else:
    st.table(pairs_table(summary.top_pairs), hide_index=True)

st.subheader("Started dropping recently")
st.caption("Pairs whose first drop falls in the last quarter of the window and that were "
           "forwarded before: often a policy change.")
if summary.new_drops.empty:
    st.success("No pair started dropping recently.", icon=":material/check_circle:")
else:
    st.table(pairs_table(summary.new_drops), hide_index=True)

# -- jump to Troubleshoot with a pair filled in (pods only: Explain needs pods)
try:
    pods = {e.key for e in data.endpoints()}
except data.RelayError:
    pods = set()
pairs = summary.top_pairs
candidates = [
    (r.source, r.destination, int(r.port), str(r.protocol))
    for r in pairs.itertuples()
    if r.source in pods and r.destination in pods and r.protocol in ("TCP", "UDP", "SCTP")
]
if candidates:
    st.subheader("Why?")
    cols = st.columns([4, 1], vertical_alignment="bottom")
    pick = cols[0].selectbox(
        "Explain a dropped pair", candidates, key="dr_pick",
        format_func=lambda c: f"{c[0]} → {c[1]} on {c[2]}/{c[3]}")
    if cols[1].button("Troubleshoot", key="dr_go", icon=":material/troubleshoot:") and pick:
        st.switch_page("views/troubleshoot.py", query_params={
            "from": pick[0], "to": pick[1], "port": str(pick[2]), "protocol": pick[3]})
