"""Service map: workloads grouped by namespace, edges coloured by verdict with
counts; click an edge (or pick it from the list) to see its flows."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import data
from ui.components import banner, flowtable, graph, window

st.header("Service map")
span = window.current()

try:
    all_namespaces = data.namespaces()
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

chosen = st.session_state.get("sm_namespaces", [])
namespaces = st.multiselect(
    "Namespaces", sorted(set(all_namespaces) | set(chosen)), key="sm_namespaces",
    placeholder="All namespaces", help="Edges with either end in these namespaces; "
    "leave empty for all namespaces.")
toggles = st.columns(4)
hide_dns = toggles[0].toggle("Hide DNS", key="sm_hide_dns", help="Edges to port 53")
hide_host = toggles[1].toggle("Hide host", key="sm_hide_host",
                              help="Edges from or to the host and remote nodes")
hide_monitoring = toggles[2].toggle("Hide monitoring", key="sm_hide_monitoring",
                                    help="Edges from or to monitoring namespaces")
hide_world = toggles[3].toggle("Hide world", key="sm_hide_world",
                               help="Edges from or to addresses outside the cluster")

try:
    smap = data.service_map(span, namespaces, hide_dns=hide_dns, hide_host=hide_host,
                            hide_monitoring=hide_monitoring, hide_world=hide_world)
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

if smap.edges.empty:
    scope = "these namespaces" if namespaces else "any namespace"
    banner.no_data(f"no traffic in {scope} in the {window.describe()}.",
                   "Widen the time window, pick other namespaces or turn the hiding "
                   "toggles off.")
    st.stop()
if smap.truncated:
    st.warning(f"The relay returned only the busiest {len(smap.edges)} edges; narrow the "
               "namespaces or the time window to see the rest.", icon=":material/content_cut:")

map_namespaces = sorted({str(n) for n in smap.workloads["namespace"] if n})
with st.expander("Layout and filters", expanded=len(smap.workloads) > graph.READABLE_WORKLOADS):
    lc = st.columns([3, 2, 1, 1.4], vertical_alignment="bottom")
    if "sm_collapsed" not in st.session_state:
        st.session_state["sm_collapsed"] = graph.default_collapsed(smap.workloads)
    current = [n for n in st.session_state["sm_collapsed"] if n in map_namespaces]
    st.session_state["sm_collapsed"] = current
    collapsed = lc[0].multiselect(
        "Collapse namespaces", map_namespaces, key="sm_collapsed",
        help="Draw each of these namespaces as one node.")
    text = lc[1].text_input("Workload contains", key="sm_text",
                            placeholder="e.g. frontend")
    min_flows = lc[2].number_input("Min flows", min_value=0, step=1, key="sm_min_flows")
    st.session_state.setdefault("sm_group_ports", len(smap.edges) > 60)
    group_ports = lc[3].toggle("Group ports", key="sm_group_ports",
                               help="One arrow per pair and verdict, whatever the port")

model = graph.build_model(smap.workloads, smap.edges, collapsed=collapsed, text=text,
                          min_flows=int(min_flows), group_ports=group_ports)
if not model.edges:
    banner.no_data("no edge matches the layout filters.", "Clear 'Workload contains' or "
                   "lower 'Min flows'.")
    st.stop()

# A click on the chart arrives as the chart's widget state before this run.
clicked = graph.selected_edge_key(st.session_state.get("sm_chart"))
if clicked and clicked != st.session_state.get("sm_last_click"):
    st.session_state["sm_last_click"] = clicked
    st.session_state["sm_edge"] = clicked
keys = [e.key for e in model.edges]
if st.session_state.get("sm_edge") not in keys:
    st.session_state["sm_edge"] = None
selected = st.session_state.get("sm_edge")

counts = smap.edges.groupby("verdict")["flows"].sum()
legend = " · ".join(f"{v.lower()}: {int(n):,} flows" for v, n in counts.items())
n_workloads = len([n for n in model.nodes.values() if n.kind != "namespace"])
st.caption(f"{n_workloads} workloads, {len(model.edges)} edges in the {window.describe()} · "
           f"{legend} · click an arrow to see its flows")

st.plotly_chart(graph.figure(model, selected=selected), key="sm_chart", on_select="rerun",
                selection_mode="points", config={"displaylogo": False})

labels = {e.key: graph.edge_label(e, model.nodes) for e in model.edges}
edge_key = st.selectbox("Edge", keys, index=None, key="sm_edge",
                        format_func=lambda k: labels.get(k, k),
                        placeholder="Click an arrow on the map, or pick an edge here")

if edge_key:
    edge = model.edge(edge_key)
    assert edge is not None
    st.subheader(f"Flows of {graph.node_label(edge.source, model.nodes)} → "
                 f"{graph.node_label(edge.destination, model.nodes)}")
    st.caption(f"{edge.port_label} · {edge.verdict} · {edge.flows} flows · "
               f"{edge.packets} packets · {edge.bytes} bytes"
               + (f" · drop reasons: {edge.drop_reasons}" if edge.drop_reasons else ""))
    try:
        page = data.search_flows(span, page_size=100, **graph.edge_flow_query(edge))
    except data.RelayError as err:
        banner.relay_error(err)
    else:
        if not page.flows:
            banner.no_data("the relay returned no flow for this edge (they may have aged "
                           "out of retention).")
        else:
            flowtable.render(flowtable.frame(page.flows), key="sm_edge_flows")
            if page.next_page_token:
                st.caption("Showing the newest 100; open the Flows page for more.")

with st.expander(f"All edges ({len(model.edges)})"):
    st.dataframe(
        pd.DataFrame([
            {"source": graph.node_label(e.source, model.nodes),
             "destination": graph.node_label(e.destination, model.nodes),
             "port": e.port_label,
             "verdict": e.verdict, "flows": e.flows, "packets": e.packets, "bytes": e.bytes,
             "drop_reasons": e.drop_reasons}
            for e in model.edges
        ]),
        hide_index=True, key="sm_edges_table",
    )
