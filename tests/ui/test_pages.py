"""AppTest tests of each page's logic against the fake relay (custom components,
such as clicking the plotly service map, are exercised in the browser test)."""

from __future__ import annotations

from typing import Any

import grpc
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sensilla.protos import flow_pb2
from tests.ui.conftest import APP
from tests.ui.fake_relay import FakeRelay
from ui.components import graph

pytestmark = pytest.mark.unit

PAGES = ["overview", "service_map", "flows", "drops", "troubleshoot"]
_RELAY: dict[str, FakeRelay] = {}


@pytest.fixture(autouse=True)
def _track_relay(request: pytest.FixtureRequest) -> Any:
    """Lets run_page forget the relay calls of the entry page's first run."""
    if "relay" in request.fixturenames:
        _RELAY["current"] = request.getfixturevalue("relay")
    yield
    _RELAY.clear()


def run_page(page: str, *, state: dict[str, Any] | None = None,
             query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()  # the entry script first: st.navigation registers the pages
    if page != "overview":
        relay = _RELAY.get("current")
        if relay is not None:
            relay.calls.clear()
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every piece of text the page shows (markdown, captions, banners, headers)."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                 "info", "success", "code"):
        parts.extend(str(e.value) for e in getattr(at, kind))
    for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning",
                 "info", "success"):
        parts.extend(str(e.value) for e in getattr(at.sidebar, kind))
    return "\n".join(parts)


# AppTest does not expose a dataframe's key: tables are told apart by a column only
# they have, and by their order on the page.
TABLES: dict[str, tuple[str, int]] = {
    "overview_nodes": ("flows_seen", 0),
    "sm_edges_table": ("drop_reasons", 0),
    "sm_edge_flows": ("tcp_flags", 0),
    "fl_table": ("tcp_flags", 0),
    "fl_live_table": ("tcp_flags", 0),
    "ts_flows": ("tcp_flags", 0),
}
# Static tables (st.table): the Drops page's pairs, in page order.
STATIC = {"dr_top": 0, "dr_new": 1}


def frame(at: AppTest, key: str) -> pd.DataFrame:
    if key in STATIC:
        tables = at.table
        if len(tables) <= STATIC[key]:
            raise AssertionError(f"no table {key!r} on the page")
        return tables[STATIC[key]].value
    column, nth = TABLES[key]
    found = [df.value for df in at.dataframe if column in df.value.columns]
    if len(found) <= nth:
        raise AssertionError(f"no table {key!r} on the page")
    return found[nth]


def plotly_count(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# --------------------------------------------------------------------------- overview


def test_sui_overview_shows_status_rates_reasons_and_nodes(relay: FakeRelay) -> None:
    at = run_page("overview")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Flows stored"] == f"{len(relay.data.flows):,}"
    assert metrics["Nodes connected"] == "2"
    assert metrics["Nodes unavailable"] == "0"
    # flows/s, drops/s and the top reasons charts
    assert plotly_count(at) == 3
    nodes = frame(at, "overview_nodes")
    assert sorted(nodes["name"]) == ["worker", "worker2"]
    assert set(nodes["state"]) == {"connected"}
    assert nodes["last_seen"].notna().all()  # from Query.Nodes
    assert list(nodes["lost_events"]) == [0, 0]
    # the relay did the aggregation: one FlowRates and one DropSummary call
    assert len(relay.requests("FlowRates")) == 1
    (drops_req,) = relay.requests("DropSummary")
    assert drops_req.window.until.seconds - drops_req.window.since.seconds == 3600
    assert "2 nodes connected" in texts(at)


def test_sui_overview_empty_relay_says_no_data(relay: FakeRelay) -> None:
    relay.use("empty")
    at = run_page("overview")
    text = texts(at)
    assert "No data:** no flows in the last hour" in text
    assert "no drops in the last hour" in text
    assert plotly_count(at) == 0
    assert not at.error


def test_sui_overview_unavailable_node_is_flagged(relay: FakeRelay) -> None:
    relay.data.unavailable_nodes.append("worker2")
    try:
        at = run_page("overview")
    finally:
        relay.data.unavailable_nodes.clear()
    assert {m.label: m.value for m in at.metric}["Nodes unavailable"] == "1"
    assert "Not connected: worker2 (unavailable)" in texts(at)
    assert "1 node(s) unavailable: worker2" in texts(at)


def test_sui_overview_nodes_fall_back_to_hubble_get_nodes(relay: FakeRelay) -> None:
    relay.fail("Nodes", grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    relay.data.lost_events["worker"] = 12
    try:
        at = run_page("overview")
    finally:
        relay.data.lost_events.clear()
    nodes = frame(at, "overview_nodes")
    assert sorted(nodes["name"]) == ["worker", "worker2"]
    assert nodes["last_seen"].isna().all()
    assert relay.requests("GetNodes")
    assert not at.main.error


def test_sui_overview_lost_events_are_flagged(relay: FakeRelay) -> None:
    relay.data.lost_events["worker2"] = 1234
    try:
        at = run_page("overview")
    finally:
        relay.data.lost_events.clear()
    assert "Events lost (perf ring or queue overflow): worker2 (1,234)" in texts(at)


def test_sui_overview_one_failing_section_does_not_hide_the_others(relay: FakeRelay) -> None:
    relay.fail("FlowRates", grpc.StatusCode.INTERNAL, "clickhouse exploded")
    at = run_page("overview")
    (err,) = at.main.error
    assert "Relay error" in err.value and "clickhouse exploded" in err.value
    assert "FlowRates" in err.value
    assert plotly_count(at) == 1  # the drop reasons still render
    assert not frame(at, "overview_nodes").empty


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("page", PAGES)
def test_sui_relay_down_banner_on_every_page(page: str, monkeypatch: pytest.MonkeyPatch,
                                             relay: FakeRelay) -> None:
    # a port where nothing listens: the relay's own address after it is stopped would
    # be the same, without stopping the shared relay
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("SENSILLA_UI_RELAY", dead)
    at = run_page(page)
    (err,) = at.main.error
    assert "Relay unavailable: cannot reach the relay at " + dead in err.value
    assert "sensilla relay" in err.value  # what to do about it
    assert "Relay unreachable" in texts(at)  # the entry script's sidebar
    assert "(call: `ServerStatus`" in err.value  # its relay check stopped the page
    assert "Traceback" not in texts(at)


@pytest.mark.parametrize("page", ["service_map", "drops", "troubleshoot"])
def test_sui_relay_without_query_api_says_so(page: str, relay: FakeRelay) -> None:
    for method in ("ServiceMap", "FlowRates", "DropSummary", "SearchFlows", "ListEndpoints",
                   "Explain"):
        relay.fail(method, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    at = run_page(page)
    assert at.main.error
    assert "does not serve this API" in at.main.error[0].value


def test_sui_wrong_token_is_an_honest_banner(relay: FakeRelay, tmp_path: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    relay.token = "s3cret"
    try:
        token = tmp_path / "token"
        token.write_text("wrong\n")
        monkeypatch.setenv("SENSILLA_UI_TOKEN_FILE", str(token))
        at = run_page("overview")
        assert "Relay refused the credentials" in at.main.error[0].value
        token.write_text("s3cret\n")
        at = run_page("overview")
        assert not at.error
    finally:
        relay.token = None


# --------------------------------------------------------------------------- service map


def test_sui_service_map_shows_workloads_by_namespace_and_verdict_edges(
    relay: FakeRelay,
) -> None:
    at = run_page("service_map")
    (req,) = relay.requests("ServiceMap")
    assert list(req.namespaces) == []  # all namespaces by default
    assert not (req.hide_dns or req.hide_host or req.hide_monitoring or req.hide_world)
    assert at.multiselect(key="sm_namespaces").options == [
        "kube-system", "monitoring", "x", "y", "z"]
    assert plotly_count(at) == 1
    edges = frame(at, "sm_edges_table")
    dropped = edges[(edges["source"] == "x/a") & (edges["destination"] == "y/b")
                    & (edges["verdict"] == "DROPPED")]
    assert len(dropped) == 1
    assert dropped.iloc[0]["port"] == "80/TCP"
    assert dropped.iloc[0]["drop_reasons"] == "POLICY_DENIED"
    assert set(edges["verdict"]) == {"FORWARDED", "DROPPED", "AUDIT"}
    assert "13 workloads, 12 edges" in texts(at)


def test_sui_service_map_selected_edge_lists_exactly_its_flows(relay: FakeRelay) -> None:
    key = "x/a|y/b|TCP|80|DROPPED"
    at = run_page("service_map", state={"sm_edge": key})
    assert "Flows of x/a → y/b" in texts(at)
    flows = frame(at, "sm_edge_flows")
    assert len(flows) > 0
    assert set(flows["source"]) == {"x/a"} and set(flows["destination"]) == {"y/b"}
    assert set(flows["verdict"]) == {"DROPPED"}
    assert set(flows["drop_reason"]) == {"POLICY_DENIED"}
    (req,) = relay.requests("SearchFlows")
    assert req.source_workload_id == "x/a" and req.destination_workload_id == "y/b"
    assert list(req.whitelist) == [flow_pb2.FlowFilter(
        verdict=[flow_pb2.DROPPED], protocol=["tcp"], destination_port=["80"])]


def test_sui_service_map_toggles_and_namespaces_reach_the_relay(relay: FakeRelay) -> None:
    at = run_page("service_map")
    at.toggle(key="sm_hide_dns").set_value(True)
    at.toggle(key="sm_hide_monitoring").set_value(True)
    at.multiselect(key="sm_namespaces").select("x").select("y")
    at.run()
    assert not at.exception
    req = relay.requests("ServiceMap")[-1]
    assert req.hide_dns and req.hide_monitoring and not req.hide_host
    assert sorted(req.namespaces) == ["x", "y"]
    edges = frame(at, "sm_edges_table")
    assert not any(edges["port"] == "53/UDP")
    assert not any(edges["source"].str.startswith("monitoring/"))


def test_sui_service_map_collapsed_namespace_merges_edges(relay: FakeRelay) -> None:
    at = run_page("service_map", state={"sm_collapsed": ["x"]})
    edges = frame(at, "sm_edges_table")
    assert "x/*" in set(edges["source"]) | set(edges["destination"])
    assert not (set(edges["source"]) & {"x/a", "x/b", "x/c"})
    # picking a collapsed edge queries by namespace prefix, not by workload id
    key = "ns:x|y/b|TCP|80|DROPPED"
    at.session_state["sm_edge"] = key
    at.run()
    req = relay.requests("SearchFlows")[-1]
    assert req.source_workload_id == ""
    assert req.destination_workload_id == "y/b"
    assert list(req.whitelist[0].source_pod) == ["x/"]


def test_sui_service_map_large_cluster_stays_readable(relay: FakeRelay) -> None:
    relay.use("large")
    at = run_page("service_map")
    collapsed = at.multiselect(key="sm_collapsed").value
    assert collapsed, "64 workloads: some namespaces start collapsed"
    text = texts(at)
    shown = int(text.split(" workloads,")[0].rsplit("\n", 1)[-1])
    assert shown <= graph.READABLE_WORKLOADS
    at.text_input(key="sm_text").input("team-3")
    at.multiselect(key="sm_collapsed").set_value([])
    at.run()
    edges = frame(at, "sm_edges_table")
    assert len(edges) > 0
    assert all("team-3" in s or "team-3" in d for s, d in
               zip(edges["source"], edges["destination"], strict=True))


def test_sui_service_map_empty_says_no_data(relay: FakeRelay) -> None:
    relay.use("empty")
    at = run_page("service_map")
    assert "No data:** no traffic in any namespace in the last hour" in texts(at)
    assert plotly_count(at) == 0


# --------------------------------------------------------------------------- flows


def test_sui_flows_table_newest_first_with_hubble_columns(relay: FakeRelay) -> None:
    at = run_page("flows")
    table = frame(at, "fl_table")
    assert list(table.columns) == ["time", "source", "destination", "port", "verdict",
                                   "drop_reason", "tcp_flags", "node"]
    assert len(table) == 100
    times = list(table["time"])
    assert times == sorted(times, reverse=True)
    (req,) = relay.requests("SearchFlows")
    assert req.page_size == 100 and not req.whitelist and not req.blacklist
    labels = [getattr(b, "label", "") for b in at.get("download_button")]
    assert labels == ["Export CSV", "Export JSON"]


def test_sui_flows_filters_build_hubble_filters(relay: FakeRelay) -> None:
    at = run_page("flows")
    at.text_input(key="fl_from_pod").input("x/a")
    at.text_input(key="fl_to_port").input("80")
    at.multiselect(key="fl_verdict").select("DROPPED")
    at.text_input(key="fl_namespace").input("!kube-system")
    at.button[0].click()  # the form's "Apply filters"
    at.run()
    assert not at.exception
    req = relay.requests("SearchFlows")[-1]
    assert list(req.whitelist) == [flow_pb2.FlowFilter(
        source_pod=["x/a"], destination_port=["80"], verdict=[flow_pb2.DROPPED])]
    assert list(req.blacklist) == [flow_pb2.FlowFilter(source_pod=["kube-system/"]),
                                   flow_pb2.FlowFilter(destination_pod=["kube-system/"])]
    table = frame(at, "fl_table")
    assert len(table) > 0
    assert set(table["source"]) == {"x/a"} and set(table["verdict"]) == {"DROPPED"}
    assert "Filters · 4 active" in [e.label for e in at.expander]
    cmd = "\n".join(c.value for c in at.code)
    assert "sensilla observe --from-pod x/a --not --namespace kube-system --to-port 80 "\
        "--verdict DROPPED --since 1h --last 100" in cmd


def test_sui_flows_bad_filter_value_is_a_warning_not_a_query(relay: FakeRelay) -> None:
    at = run_page("flows")
    calls = len(relay.requests("SearchFlows"))
    at.text_input(key="fl_port").input("eighty")
    at.button[0].click()
    at.run()
    assert "Filter not applied:** --port: 'eighty' is not a port number" in texts(at)
    assert len(relay.requests("SearchFlows")) == calls


def test_sui_flows_pages_through_history(relay: FakeRelay) -> None:
    at = run_page("flows")
    first = frame(at, "fl_table")
    at.button(key="fl_older").click()
    at.run()
    second = frame(at, "fl_table")
    assert relay.requests("SearchFlows")[-1].page_token == "100"
    assert second["time"].max() <= first["time"].min()
    assert "Page 2" in texts(at)
    at.button(key="fl_newer").click()
    at.run()
    assert "Page 1" in texts(at)


def test_sui_flows_live_mode_reads_the_observer(relay: FakeRelay) -> None:
    at = run_page("flows", state={"fl_page_size": 50})
    at.toggle(key="fl_live").set_value(True)
    at.run()
    assert not at.exception
    (req,) = relay.requests("GetFlows")
    assert req.number == 50 and not req.follow
    table = frame(at, "fl_live_table")
    assert len(table) == 50
    assert list(table["time"]) == sorted(table["time"], reverse=True)
    assert "Live" in texts(at)


def test_sui_flows_relay_rejects_filter(relay: FakeRelay) -> None:
    relay.fail("SearchFlows", grpc.StatusCode.INVALID_ARGUMENT,
               "whitelist[0].source_ip[0]: not an IP address")
    at = run_page("flows")
    (warn,) = at.warning
    assert "The relay rejected the request" in warn.value
    assert "whitelist[0].source_ip[0]" in warn.value


# --------------------------------------------------------------------------- drops


def test_sui_drops_lists_the_denied_pair_with_its_policy(relay: FakeRelay) -> None:
    at = run_page("drops")
    top = frame(at, "dr_top")
    assert list(top.columns) == ["Source", "Destination", "Port/Protocol", "Reason", "Drops",
                                 "Denied by", "First drop (UTC)", "Last drop (UTC)"]
    row = top[(top["Source"] == "x/a") & (top["Destination"] == "y/b")].iloc[0]
    assert row["Reason"] == "POLICY_DENIED"
    assert row["Port/Protocol"] == "80/TCP"
    assert row["Denied by"] == "default deny (selected by y/allow-from-y)"
    other = top[top["Source"] == "z/b"].iloc[0]
    assert other["Denied by"] == "not a policy drop"
    new = frame(at, "dr_new")
    assert list(zip(new["Source"], new["Destination"], strict=True)) == [("x/a", "y/b")]
    assert plotly_count(at) == 1
    (req,) = relay.requests("DropSummary")
    assert req.step_seconds == 60 and req.limit == 25
    assert at.selectbox(key="dr_pick").value == ("x/a", "y/b", 80, "TCP")


def test_sui_drops_namespace_filter_and_no_drops(relay: FakeRelay) -> None:
    at = run_page("drops")
    at.multiselect(key="dr_namespaces").select("monitoring")
    at.run()
    assert list(relay.requests("DropSummary")[-1].namespaces) == ["monitoring"]
    assert "No drops in the last hour in monitoring." in texts(at)


# --------------------------------------------------------------------------- troubleshoot


def test_sui_troubleshoot_explains_a_denied_pair_with_a_snippet(relay: FakeRelay) -> None:
    at = run_page("troubleshoot", query={"from": "x/a", "to": "y/b", "port": "80",
                                         "protocol": "TCP"})
    assert at.selectbox(key="ts_source").value == "x/a"
    assert at.selectbox(key="ts_destination").value == "y/b"
    (err,) = at.main.error
    assert "Denied" in err.value
    text = texts(at)
    assert "x/a -> y/b TCP/80: DENIED  \nEgress from x/a: allowed" in text  # line breaks kept
    assert "Ingress to y/b: DENIED by default deny; y/b is selected for ingress by "\
        "y/allow-from-y" in text
    assert "**Ingress** at `y/b`: selected by `y/allow-from-y`, and no rule allows this "\
        "traffic → denied by default deny." in text
    assert "**Egress** at `x/a`: no policy selects it for egress" in text
    assert "Last observed for this pair and port: **DROPPED** (POLICY_DENIED)" in text
    (code,) = [c.value for c in at.code]
    assert code.startswith("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy")
    assert "namespace: y" in code and "port: 80" in code
    flows = frame(at, "ts_flows")
    assert set(flows["source"]) <= {"x/a", "y/b"} and set(flows["destination"]) <= {"x/a", "y/b"}
    assert "DROPPED" in set(flows["verdict"])
    (req,) = relay.requests("Explain")
    assert (req.source, req.destination, req.port, req.protocol) == ("x/a", "y/b", 80, "TCP")
    (search,) = relay.requests("SearchFlows")
    assert [list(f.source_pod) for f in search.whitelist] == [["x/a"], ["y/b"]]


def test_sui_troubleshoot_allowed_pair_has_no_snippet(relay: FakeRelay) -> None:
    at = run_page("troubleshoot")
    assert "Choose a source and a destination pod." in texts(at)
    at.selectbox(key="ts_source").select("x/b")
    at.selectbox(key="ts_destination").select("y/a")
    at.run()
    assert not at.exception
    assert any("Allowed" in s.value for s in at.success)
    assert "Ingress to y/a: allowed; no NetworkPolicy selects y/a for ingress." in texts(at)
    assert not at.code
    assert len(frame(at, "ts_flows")) > 0


def test_sui_troubleshoot_allowed_by_a_rule_names_it(relay: FakeRelay) -> None:
    at = run_page("troubleshoot", state={"ts_source": "y/c", "ts_destination": "y/b"})
    assert any("Allowed" in s.value for s in at.success)
    assert ("**Ingress** at `y/b`: selected by `y/allow-from-y`; allowed by `y/allow-from-y "
            "(spec.ingress[0]; peer: pods in namespaces with ns=y; port: TCP/80)`.") in texts(at)


def test_sui_troubleshoot_audit_mode_is_a_warning(relay: FakeRelay) -> None:
    at = run_page("troubleshoot", state={"ts_source": "x/a", "ts_destination": "z/a"})
    (warn,) = at.main.warning
    assert "denying side is in audit mode, so the packets pass" in warn.value
    assert "(audit mode: denials are logged, not enforced)" in texts(at)
    assert not at.main.error


def test_sui_troubleshoot_icmp_has_no_port(relay: FakeRelay) -> None:
    at = run_page("troubleshoot", state={"ts_source": "x/a", "ts_destination": "y/b",
                                         "ts_protocol": "ICMP"})
    assert at.number_input(key="ts_port").disabled
    (req,) = relay.requests("Explain")
    assert (req.port, req.protocol) == (0, "ICMP")
    assert "over **ICMP**" in at.main.error[0].value
    (search,) = relay.requests("SearchFlows")
    assert list(search.whitelist[0].protocol) == ["icmpv4", "icmpv6"]
    assert not search.whitelist[0].destination_port


def test_sui_troubleshoot_relay_rejects_a_pair(relay: FakeRelay) -> None:
    relay.fail("Explain", grpc.StatusCode.INVALID_ARGUMENT, "destination: unknown pod")
    at = run_page("troubleshoot", state={"ts_source": "x/a", "ts_destination": "y/b"})
    assert "destination: unknown pod" in at.warning[0].value


def test_sui_troubleshoot_no_pods(relay: FakeRelay) -> None:
    relay.use("empty")
    at = run_page("troubleshoot")
    assert "No data:** the relay knows no pods." in texts(at)


def test_sui_troubleshoot_ignores_bad_link_parameters(relay: FakeRelay) -> None:
    at = run_page("troubleshoot", query={"from": "nope/x", "to": "y/b", "port": "¹",
                                         "protocol": "gopher"})
    assert at.selectbox(key="ts_source").value is None
    assert at.selectbox(key="ts_destination").value == "y/b"
    assert at.number_input(key="ts_port").value == 80
    assert at.selectbox(key="ts_protocol").value == "TCP"
    assert "Choose a source and a destination pod." in texts(at)
