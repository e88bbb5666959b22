"""Flows: a Hubble-like table with the filters of `sensilla observe`, live mode,
paging through history, and export to CSV and JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st
from google.protobuf import json_format

from ui import data
from ui.components import banner, flowfmt, flowtable, window
from ui.components import filters as flt

LIVE_INTERVAL_S = 2.0
PAGE_SIZES = [50, 100, 250, 500, 1000]

st.header("Flows")

TEXT_FIELDS: list[tuple[str, str, str]] = [
    # (flag, label, placeholder)
    ("from-pod", "From pod", "x/a"),
    ("to-pod", "To pod", "y/b"),
    ("pod", "Pod (either end)", "ns/pod-prefix"),
    ("from-namespace", "From namespace", "x"),
    ("to-namespace", "To namespace", "y"),
    ("namespace", "Namespace (either end)", "kube-system"),
    ("from-label", "From label", "k8s:pod=a"),
    ("to-label", "To label", "k8s:app=db"),
    ("label", "Label (either end)", "k8s:team=web"),
    ("from-ip", "From IP", "10.244.1.5"),
    ("to-ip", "To IP", "10.244.0.0/16"),
    ("ip", "IP (either end)", "fd00::/8"),
    ("from-identity", "From identity", "world"),
    ("to-identity", "To identity", "12345"),
    ("identity", "Identity (either end)", "host"),
    ("from-port", "From port", "43210"),
    ("to-port", "To port", "80"),
    ("port", "Port (either end)", "53"),
]
CHOICES: list[tuple[str, str, tuple[str, ...]]] = [
    ("protocol", "Protocol", flt.PROTOCOLS),
    ("verdict", "Verdict", flt.VERDICTS),
    ("drop-reason-desc", "Drop reason", flt.DROP_REASONS),
    ("type", "Event type", tuple(flt.EVENT_TYPES)),
]


def _key(flag: str) -> str:
    return "fl_" + flag.replace("-", "_")


def _active_filters() -> int:
    n = sum(1 for flag, _l, _p in TEXT_FIELDS if st.session_state.get(_key(flag)))
    n += sum(1 for flag, _l, _o in CHOICES if st.session_state.get(_key(flag)))
    return n + (1 if st.session_state.get(_key("node-name")) else 0)


# The filters as last applied (form values reach session state on submit).
fields = {flag: str(st.session_state.get(_key(flag), "") or "") for flag, _l, _p in
          TEXT_FIELDS}
fields["node-name"] = str(st.session_state.get(_key("node-name"), "") or "")
choices = {flag: (list(st.session_state.get(_key(flag), []) or []),
                  bool(st.session_state.get(_key(flag) + "_not", False)))
           for flag, _l, _o in CHOICES}
conditions = flt.conditions_from_form(fields, choices)
problem: flt.FilterInputError | None = None
try:
    whitelist, blacklist = flt.build(conditions)
except flt.FilterInputError as err:
    problem = err

active = _active_filters()
with st.expander(f"Filters · {active} active" if active else "Filters",
                 icon=":material/filter_alt:", expanded=problem is not None), \
        st.form("fl_filters", border=False):
    st.caption("Same filters as `sensilla observe`: values separated by commas are ORed, "
               "different fields are ANDed; prefix a value with `!` to exclude it (`--not`).")
    for row in range(0, len(TEXT_FIELDS), 3):
        cols = st.columns(3)
        for col, (flag, label, placeholder) in zip(cols, TEXT_FIELDS[row:row + 3], strict=True):
            col.text_input(label, key=_key(flag), placeholder=placeholder)
    ccols = st.columns(4)
    for col, (flag, label, options) in zip(ccols, CHOICES, strict=True):
        col.multiselect(label, options, key=_key(flag))
        col.checkbox("exclude", key=_key(flag) + "_not", help=f"--not --{flag}")
    last = st.columns([2, 1, 1], vertical_alignment="bottom")
    last[0].text_input("Node", key=_key("node-name"), placeholder="worker")
    last[1].selectbox("Rows", PAGE_SIZES, index=1, key="fl_page_size")
    last[2].form_submit_button("Apply filters", type="primary", width="stretch")

if problem is not None:
    st.warning(f"**Filter not applied:** {problem}", icon=":material/warning:")
    st.stop()

page_size = int(st.session_state.get("fl_page_size", 100))
span = window.current()
with st.expander("Equivalent command line"):
    st.code(flt.observe_command(conditions, extra=["--since", window.since_flag(), "--last",
                                                   str(page_size)]), language="bash")

live = st.toggle("Live", key="fl_live",
                 help=f"Show the newest flows, refreshed every {LIVE_INTERVAL_S:g} s")


def exports(flows: list[Any], table: Any, key: str) -> None:
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("Export CSV", flowfmt.to_csv(table), file_name="flows.csv",
                       mime="text/csv", key=f"{key}_csv", on_click="ignore",
                       icon=":material/download:")
    c2.download_button("Export JSON", data.flows_to_json_lines(flows), file_name="flows.json",
                       mime="application/x-ndjson", key=f"{key}_json", on_click="ignore",
                       icon=":material/download:")


if live:

    @st.fragment(run_every=LIVE_INTERVAL_S)
    def live_table() -> None:
        try:
            flows = data.latest_flows(whitelist=whitelist, blacklist=blacklist,
                                      number=page_size)
        except data.RelayError as err:
            banner.relay_error(err)
            return
        except Exception as exc:  # a fragment rerun bypasses the app's guard
            banner.ui_failure(exc)
            return
        flows = list(reversed(flows))  # newest first
        st.caption(f"🔴 Live · {len(flows)} newest flows · updated "
                   f"{datetime.now(UTC):%H:%M:%S} UTC")
        if not flows:
            banner.no_data("no flow matches the filters yet.")
            return
        table = flowtable.frame(flows)
        flowtable.render(table, key="fl_live_table", height=560)
        exports(flows, table, "fl_live")

    live_table()
    st.stop()

# -- history: SearchFlows, newest first, paged with the relay's tokens
query_id = (tuple(f.SerializeToString(deterministic=True) for f in whitelist),
            tuple(f.SerializeToString(deterministic=True) for f in blacklist),
            window.label(), page_size)
if st.session_state.get("fl_query") != query_id:
    st.session_state["fl_query"] = query_id
    st.session_state["fl_tokens"] = [""]
tokens: list[str] = st.session_state["fl_tokens"]

try:
    page = data.search_flows(span, whitelist=whitelist, blacklist=blacklist,
                             page_size=page_size, page_token=tokens[-1])
except data.RelayError as err:
    banner.relay_error(err)
    st.stop()

flows = list(page.flows)
nav = st.columns([1, 1, 6], vertical_alignment="center")
if nav[0].button("◀ Newer", disabled=len(tokens) == 1, key="fl_newer"):
    tokens.pop()
    st.rerun()
if nav[1].button("Older ▶", disabled=not page.next_page_token, key="fl_older"):
    tokens.append(page.next_page_token)
    st.rerun()
nav[2].caption(f"Page {len(tokens)} · {len(flows)} flows · {window.describe()}"
               + (" · filtered" if conditions else ""))

if not flows:
    banner.no_data(
        f"no flow matches the filters in the {window.describe()}." if conditions
        else f"no flows in the {window.describe()}.",
        "Widen the time window or relax the filters." if conditions else "")
    st.stop()

table = flowtable.frame(flows)
state = flowtable.render(table, key="fl_table", height=560, selectable=True)
exports(flows, table, "fl")
rows = []
try:
    rows = list(state.selection.rows)  # type: ignore[union-attr]
except AttributeError:
    rows = []
if rows:
    chosen = flows[rows[0]]
    st.subheader("Flow details")
    st.code(flowfmt.compact(chosen), language=None)
    st.json(json_format.MessageToDict(chosen))
