"""Overview: flows/s and drops/s over time, top drop reasons, nodes and their state."""

from __future__ import annotations

import streamlit as st

from ui import data
from ui.components import banner, charts, window

st.header("Overview")
span = window.current()
st.caption(f"Showing the {window.describe()} · {span.since:%Y-%m-%d %H:%M} – "
           f"{span.until:%H:%M} UTC")

# -- relay counters (ServerStatus was fetched by the app; cached briefly)
try:
    status = data.status()
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

cols = st.columns(4)
cols[0].metric("Flows stored", f"{status.num_flows:,}")
cols[1].metric("Flow rate", f"{status.flows_rate:,.1f}/s")
cols[2].metric("Nodes connected",
               "?" if status.connected_nodes is None else str(status.connected_nodes))
cols[3].metric("Nodes unavailable",
               "?" if status.unavailable_nodes is None else str(status.unavailable_nodes))

# -- rates
st.subheader("Traffic")
try:
    rates = data.flow_rates(span, step_seconds=data.default_step(span))
except data.RelayError as err:
    banner.relay_error(err)
else:
    if rates.frame.empty:
        banner.no_data(f"no flows in the {window.describe()}.",
                       "Traffic shows up here as soon as the collectors report it.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(charts.verdict_rates(rates.frame, title="Flows per second by verdict",
                                               step_seconds=rates.step_seconds, span=span),
                          key="overview_flows")
        if (rates.frame["verdict"] == "DROPPED").any():
            right.plotly_chart(
                charts.verdict_rates(rates.frame, title="Drops per second", only="DROPPED",
                                     step_seconds=rates.step_seconds, span=span),
                key="overview_drops")
        else:
            right.success(f"No drops in the {window.describe()}.", icon=":material/check_circle:")
        st.caption(f"Buckets of {rates.step_seconds} s, computed by the relay.")

# -- drop reasons
st.subheader("Top drop reasons")
try:
    drops = data.drop_summary(span, step_seconds=data.default_step(span), limit=10)
except data.RelayError as err:
    banner.relay_error(err)
else:
    totals = charts.reason_totals(drops.reasons)
    if totals.empty:
        banner.no_data(f"no drops in the {window.describe()}.")
    else:
        st.plotly_chart(charts.top_reasons(totals.head(10), title="Drops by reason"),
                        key="overview_reasons")

# -- nodes
st.subheader("Nodes")
try:
    nodes = data.nodes()
except data.RelayError as err:
    banner.relay_error(err)
else:
    if nodes.empty:
        banner.no_data("the relay knows no nodes yet.",
                       "Nodes appear when their collectors connect to the relay.")
    else:
        bad = nodes[nodes["state"] != "connected"]
        if not bad.empty:
            st.warning("Not connected: " + ", ".join(
                f"{r.name} ({r.state})" for r in bad.itertuples()), icon=":material/warning:")
        lossy = nodes[nodes["lost_events"].fillna(0) > 0]
        if not lossy.empty:
            st.warning("Events lost (perf ring or queue overflow): " + ", ".join(
                f"{r.name} ({int(r.lost_events):,})" for r in lossy.itertuples()),
                icon=":material/warning:")
        st.dataframe(
            nodes,
            hide_index=True,
            column_config={
                "name": "Node",
                "state": "State",
                "address": "Address",
                "version": "Version",
                "last_seen": st.column_config.DatetimeColumn("Last seen (UTC)",
                                                             format="YYYY-MM-DD HH:mm:ss"),
                "flows_stored": st.column_config.NumberColumn("Flows stored", format="%d"),
                "flows_seen": st.column_config.NumberColumn("Flows seen", format="%d"),
                "lost_events": st.column_config.NumberColumn("Lost events", format="%d"),
            },
            key="overview_nodes",
        )
