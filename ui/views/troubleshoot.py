"""Troubleshoot: pick a source, a destination, a port and a protocol; see the recent
flows between them, the verdict, the Explain answer in plain words, and a
NetworkPolicy that would allow the traffic."""

from __future__ import annotations

import streamlit as st

from sensilla.protos import flow_pb2
from ui import data
from ui.components import banner, flowfmt, flowtable, window

PROTOCOLS = ["TCP", "UDP", "SCTP", "ICMP"]

st.header("Troubleshoot")
st.caption("Why can (or can't) one pod reach another?")

try:
    endpoints = data.endpoints()
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()
if not endpoints:
    banner.no_data("the relay knows no pods.",
                   "Pods appear once the relay's watch of the cluster sees them.")
    st.stop()

keys = [e.key for e in endpoints]
by_key = {e.key: e for e in endpoints}

# Prefill from the URL (the Drops page links here): ?from=x/a&to=y/b&port=80&protocol=TCP
if not st.session_state.get("ts_prefilled"):
    st.session_state["ts_prefilled"] = True
    qp = st.query_params
    if qp.get("from") in by_key:
        st.session_state["ts_source"] = qp["from"]
    if qp.get("to") in by_key:
        st.session_state["ts_destination"] = qp["to"]
    raw_port = str(qp.get("port", ""))
    if raw_port.isascii() and raw_port.isdigit() and 0 < int(raw_port) < 65536:
        st.session_state["ts_port"] = int(qp["port"])
    if str(qp.get("protocol", "")).upper() in PROTOCOLS:
        st.session_state["ts_protocol"] = str(qp["protocol"]).upper()

st.session_state.setdefault("ts_port", 80)
cols = st.columns([3, 3, 1, 1])
source = cols[0].selectbox("Source pod", keys, index=None, key="ts_source",
                           placeholder="namespace/pod")
destination = cols[1].selectbox("Destination pod", keys, index=None, key="ts_destination",
                                placeholder="namespace/pod")
protocol = cols[3].selectbox("Protocol", PROTOCOLS, key="ts_protocol")
icmp = protocol == "ICMP"
port = cols[2].number_input("Port", min_value=1, max_value=65535, step=1, key="ts_port",
                            disabled=icmp, help="ICMP has no port" if icmp else None)

if not source or not destination:
    st.info("Choose a source and a destination pod.", icon=":material/touch_app:")
    st.stop()

port = 0 if icmp else int(port)
st.query_params.update({"from": source, "to": destination, "port": str(port),
                        "protocol": protocol})

try:
    answer = data.explain(source, destination, port, protocol)
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

on = f"on **{port}/{protocol}**" if port else f"over **{protocol}**"
what = f"**{source}** → **{destination}** {on}"
if answer.allowed:
    st.success(f"Allowed: {what}", icon=":material/check_circle:")
elif answer.forwarded:
    st.warning(f"Denied by policy, but the denying side is in audit mode, so the packets "
               f"pass: {what}", icon=":material/visibility:")
else:
    st.error(f"Denied: {what}", icon=":material/block:")

st.subheader("Why")
if answer.explanation:
    # the relay's plain words, one statement per line
    st.markdown("  \n".join(line.strip() for line in answer.explanation.splitlines()
                            if line.strip()))

REASONS = {
    "not-a-pod": "is not a pod of the cluster, so no NetworkPolicy applies on this side",
    "own-node": "is the pod's own node: traffic between a pod and its node is always "
                "allowed",
}


def side(title: str, pod: str, d: data.DirectionAnswer, direction: str) -> str:
    where = f"- **{title}** at `{d.pod or pod}`"
    audit = " (audit mode: denials are logged, not enforced)" if d.audit else ""
    if d.reason in REASONS:
        return f"{where}: {REASONS[d.reason]}{audit}."
    if d.reason == "not-isolated" or (not d.reason and not d.enforced):
        return (f"{where}: no policy selects it for {direction}, so {direction} is not "
                f"restricted → allowed.")
    sel = ", ".join(f"`{p}`" for p in d.selected_by) or "a policy"
    if d.allowed:
        by = ", ".join(f"`{p}`" for p in d.allowed_by) or "a rule"
        return f"{where}: selected by {sel}; allowed by {by}{audit}."
    return (f"{where}: selected by {sel}, and no rule allows this traffic → denied by "
            f"default deny{audit}.")


st.markdown(side("Egress", source, answer.egress, "egress") + "\n"
            + side("Ingress", destination, answer.ingress, "ingress"))

last = answer.last_observed
if last is not None:
    row = flowfmt.flow_row(last)
    observed = row["verdict"]
    when = row["time"].strftime("%Y-%m-%d %H:%M:%S UTC") if row["time"] else "unknown time"
    text = f"Last observed for this pair and port: **{observed}**"
    if row["drop_reason"]:
        text += f" ({row['drop_reason']})"
    text += f" at {when} on {row['node'] or 'unknown node'}."
    model_says = "FORWARDED" if answer.forwarded else "DROPPED"
    if observed in ("FORWARDED", "DROPPED") and observed != model_says:
        st.warning(text + " This differs from the policy model's answer: the policies may "
                   "have changed since.", icon=":material/warning:")
    else:
        st.markdown(text)
else:
    st.caption("No flow observed for this pair and port within retention.")

if answer.suggested_policy:
    st.subheader("A policy that would allow it")
    st.code(answer.suggested_policy, language="yaml")
    st.download_button("Download YAML", answer.suggested_policy,
                       file_name=f"allow-{source.replace('/', '-')}-to-"
                       f"{destination.replace('/', '-')}-{protocol.lower()}"
                       f"{'-' + str(port) if port else ''}.yaml",
                       mime="application/yaml", on_click="ignore", key="ts_yaml",
                       icon=":material/download:")
    st.caption("Review it, then apply with `sensilla policy apply -f FILE`.")

st.subheader("Recent flows between them")
span = window.current()
forward = flow_pb2.FlowFilter(source_pod=[source], destination_pod=[destination])
replies = flow_pb2.FlowFilter(source_pod=[destination], destination_pod=[source])
if icmp:
    for f in (forward, replies):
        f.protocol.extend(["icmpv4", "icmpv6"])
else:
    forward.destination_port.append(str(port))
    replies.source_port.append(str(port))
    for f in (forward, replies):
        f.protocol.append(protocol.lower())
try:
    page = data.search_flows(span, whitelist=[forward, replies], page_size=200)
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()
# Hubble's pod filter is a prefix match: keep exactly these two pods.
pair = {source, destination}
flows = [f for f in page.flows
         if {flowfmt.endpoint_name(f.source, ""), flowfmt.endpoint_name(f.destination, "")}
         == pair or (source == destination)]
if not flows:
    banner.no_data(f"no flow between them {on.replace('**', '')} in the "
                   f"{window.describe()}.")
else:
    table = flowtable.frame(flows)
    counts = table["verdict"].value_counts()
    st.caption(" · ".join(f"{v.lower()}: {n}" for v, n in counts.items())
               + f" in the {window.describe()}")
    flowtable.render(table, key="ts_flows")
