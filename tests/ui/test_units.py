"""Unit tests of the UI's pieces: observe-style filters, the service-map model and
layout, flow formatting, and ui/data.py (errors, TLS, tokens, conversions)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from sensilla.protos import flow_pb2
from tests.ui.fake_relay import FakeRelay, build_lab
from ui import data
from ui.components import filters as flt
from ui.components import flowfmt, graph
from ui.config import RelayConfig

pytestmark = pytest.mark.unit


def C(flag: str, value: str, negate: bool = False) -> flt.Condition:
    return flt.Condition(flag, value, negate)


# --------------------------------------------------------------------------- filters


def test_sui_filters_either_end_flags_split_into_two_filters() -> None:
    white, black = flt.build([C("pod", "x/a"), C("verdict", "DROPPED")])
    assert white == [
        flow_pb2.FlowFilter(source_pod=["x/a"], verdict=[flow_pb2.DROPPED]),
        flow_pb2.FlowFilter(destination_pod=["x/a"], verdict=[flow_pb2.DROPPED]),
    ]
    assert black == []


def test_sui_filters_sided_flags_and_values_or_within_and_across() -> None:
    white, _ = flt.build([C("from-pod", "x/a"), C("from-pod", "x/b"), C("to-port", "80"),
                          C("protocol", "TCP"), C("to-identity", "world")])
    assert white == [flow_pb2.FlowFilter(source_pod=["x/a", "x/b"], destination_port=["80"],
                                         protocol=["tcp"], destination_identity=[2])]


def test_sui_filters_namespaces_qualify_pods_and_select_whole_namespaces() -> None:
    white, _ = flt.build([C("from-namespace", "x"), C("to-pod", "b"), C("to-namespace", "y")])
    assert white == [flow_pb2.FlowFilter(source_pod=["x/"], destination_pod=["y/b"])]
    white, _ = flt.build([C("namespace", "kube-system")])
    assert white == [flow_pb2.FlowFilter(source_pod=["kube-system/"]),
                     flow_pb2.FlowFilter(destination_pod=["kube-system/"])]


def test_sui_filters_negation_goes_to_the_blacklist() -> None:
    white, black = flt.build([C("from-pod", "x/a"), C("port", "53", negate=True)])
    assert white == [flow_pb2.FlowFilter(source_pod=["x/a"])]
    assert black == [flow_pb2.FlowFilter(source_port=["53"]),
                     flow_pb2.FlowFilter(destination_port=["53"])]


def test_sui_filters_event_types_ips_labels_nodes_reasons() -> None:
    white, _ = flt.build([C("type", "drop"), C("type", "trace:5"), C("from-ip", "10.0.0.0/8"),
                          C("to-label", "k8s:app=db"), C("node-name", "worker"),
                          C("drop-reason-desc", "policy_denied")])
    assert white == [flow_pb2.FlowFilter(
        event_type=[flow_pb2.EventTypeFilter(type=1),
                    flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=5)],
        source_ip=["10.0.0.0/8"], destination_label=["k8s:app=db"], node_name=["worker"],
        drop_reason_desc=[flow_pb2.POLICY_DENIED])]


@pytest.mark.parametrize(("conds", "message"), [
    ([C("port", "eighty")], "--port: 'eighty' is not a port number"),
    ([C("to-port", "70000")], "--to-port: '70000' is not a port number"),
    ([C("ip", "10.0.0.300")], "--ip: '10.0.0.300' is not an IP address or CIDR"),
    ([C("identity", "nobody")], "--identity: 'nobody' is not an identity"),
    ([C("verdict", "MAYBE")], "--verdict: unknown verdict 'MAYBE'"),
    ([C("drop-reason-desc", "BAD")], "--drop-reason-desc: unknown drop reason 'BAD'"),
    ([C("type", "nonsense")], "--type: unknown event type 'nonsense'"),
    ([C("from-pod", "x/a"), C("namespace", "y")], "filters --from-pod and --namespace cannot "
                                                  "be combined"),
    ([C("port", "1"), C("to-port", "2")], "filters --port and --to-port cannot be combined"),
    ([C("to-pod", "y/b"), C("to-namespace", "x")], 'namespace conflict: "x" does not contain '
                                                   '"y/b"'),
    ([C("bogus", "1")], "--bogus: unknown filter"),
])
def test_sui_filters_bad_input_names_the_flag(conds: list[flt.Condition], message: str) -> None:
    with pytest.raises(flt.FilterInputError) as err:
        flt.build(conds)
    assert message in str(err.value)


def test_sui_filters_form_values_and_command_line() -> None:
    assert flt.split_values(" x/a, !x/b ,, ! ,y/") == [("x/a", False), ("x/b", True),
                                                         ("y/", False)]
    conds = flt.conditions_from_form({"from-pod": "x/a, !x/b", "to-port": "80"},
                                     {"verdict": (["DROPPED"], False),
                                      "protocol": (["udp"], True)})
    assert conds == [C("from-pod", "x/a"), C("from-pod", "x/b", True), C("to-port", "80"),
                     C("protocol", "udp", True), C("verdict", "DROPPED")]
    assert flt.observe_command(conds, extra=["--since", "1h"]) == (
        "sensilla observe --from-pod x/a --not --from-pod x/b --to-port 80 --not --protocol "
        "udp --verdict DROPPED --since 1h")
    assert flt.observe_command([C("from-label", "k8s:a=b c")]) == (
        "sensilla observe --from-label 'k8s:a=b c'")


@settings(max_examples=200, deadline=None)
@given(hst.lists(hst.tuples(hst.sampled_from(flt.FLAGS), hst.text(max_size=12),
                            hst.booleans()), max_size=6))
def test_sui_filters_never_fail_other_than_by_filter_input_error(
    conds: list[tuple[str, str, bool]],
) -> None:
    try:
        white, black = flt.build([C(*c) for c in conds])
    except flt.FilterInputError:
        return
    for f in [*white, *black]:
        assert isinstance(f, flow_pb2.FlowFilter)
        f.SerializeToString()


# --------------------------------------------------------------------------- graph


def _map() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sensilla.protos import query_pb2
    from tests.ui.fake_relay import service_map

    now = time.time()
    smap = data.service_map_from_proto(
        service_map(build_lab(now), query_pb2.ServiceMapRequest(), now))
    return smap.workloads, smap.edges


def test_sui_graph_model_groups_by_namespace_and_keeps_counts() -> None:
    workloads, edges = _map()
    model = graph.build_model(workloads, edges)
    assert {n.group for n in model.nodes.values()} == {"kube-system", "monitoring", "x", "y",
                                                        "z", graph.RESERVED_GROUP}
    dropped = model.edge("x/a|y/b|TCP|80|DROPPED")
    assert dropped is not None and dropped.drop_reasons == "POLICY_DENIED"
    assert sum(e.flows for e in model.edges) == int(edges["flows"].sum())


def test_sui_graph_collapse_merges_counts_and_text_filter_keeps_matches() -> None:
    workloads, edges = _map()
    model = graph.build_model(workloads, edges, collapsed=["x"])
    assert "ns:x" in model.nodes and "x/a" not in model.nodes
    assert sum(e.flows for e in model.edges) == int(edges["flows"].sum())
    # x/a and x/b both talk to y: one merged edge per (port, verdict)
    into_ya = [e for e in model.edges if e.source == "ns:x" and e.destination == "y/a"]
    assert len(into_ya) == 1
    expected = int(edges[(edges["source_id"].str.startswith("x/"))
                         & (edges["destination_id"] == "y/a")]["flows"].sum())
    assert into_ya[0].flows == expected
    model = graph.build_model(workloads, edges, text="coredns")
    assert model.edges and all("coredns" in e.destination or "coredns" in e.source
                               for e in model.edges)
    model = graph.build_model(workloads, edges, min_flows=10**9)
    assert model.edges == [] and model.nodes == {}


def test_sui_graph_layout_boxes_contain_their_nodes_and_do_not_overlap() -> None:
    workloads, edges = _map()
    model = graph.build_model(workloads, edges)
    pos, boxes = graph.layout(model)
    by_group = {b.group: b for b in boxes}
    for nid, (x, y) in pos.items():
        b = by_group[model.nodes[nid].group]
        assert b.x0 < x < b.x1 and b.y0 < y < b.y1
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0


def test_sui_graph_figure_edges_carry_their_keys_and_verdict_colours() -> None:
    workloads, edges = _map()
    model = graph.build_model(workloads, edges)
    fig = graph.figure(model, selected="x/a|y/b|TCP|80|DROPPED")
    traces = {t.name: t for t in fig.data}
    assert {"forwarded", "dropped", "audit"} <= set(traces)
    assert traces["dropped"].line.color == graph.VERDICT_COLORS["DROPPED"]
    markers = traces["edges"]
    keys = list(markers.customdata)
    assert sorted(keys) == sorted(e.key for e in model.edges)
    i = keys.index("x/a|y/b|TCP|80|DROPPED")
    assert markers.marker.color[i] == graph.VERDICT_COLORS["DROPPED"]
    assert list(markers.selectedpoints) == [i]
    labels = [a.text for a in fig.layout.annotations]
    assert {"<b>x</b>", "<b>y</b>", "<b>z</b>", "<b>kube-system</b>"} <= set(labels)


def test_sui_graph_selection_event_and_edge_query() -> None:
    event = {"selection": {"points": [{"curve_number": 4, "customdata": "node:x/a"},
                                      {"curve_number": 3, "customdata": "x/a|y/b|TCP|80|"
                                                                        "DROPPED"}]}}
    assert graph.selected_edge_key(event) == "x/a|y/b|TCP|80|DROPPED"
    assert graph.selected_edge_key({"selection": {"points": []}}) is None
    assert graph.selected_edge_key(None) is None
    edge = graph.Edge("ns:x", "reserved:world", "UDP", 53, "FORWARDED", 1, 1, 1)
    q = graph.edge_flow_query(edge)
    assert q["destination_workload_id"] == "reserved:world"
    assert "source_workload_id" not in q
    assert q["whitelist"] == [flow_pb2.FlowFilter(source_pod=["x/"], verdict=[flow_pb2.FORWARDED],
                                                  protocol=["udp"], destination_port=["53"])]


def test_sui_graph_default_collapse_keeps_at_most_the_limit() -> None:
    rows = [{"id": f"ns{i}/w{j}", "namespace": f"ns{i}", "name": f"w{j}", "kind": "Deployment",
             "identity": 0} for i in range(8) for j in range(8)]
    rows.append({"id": "reserved:world", "namespace": "", "name": "world", "kind": "reserved",
                 "identity": 2})
    collapsed = graph.default_collapsed(pd.DataFrame(rows), limit=50)
    visible = 65 - sum(8 - 1 for _ in collapsed)
    assert collapsed and visible <= 50
    assert graph.default_collapsed(pd.DataFrame(rows[:10]), limit=50) == []


# --------------------------------------------------------------------------- flows


def test_sui_flow_rows_use_hubble_names_and_columns() -> None:
    ds = build_lab(time.time())
    drop = next(f for f in ds.flows if f.verdict == flow_pb2.DROPPED and f.drop_reason_desc ==
                flow_pb2.POLICY_DENIED)
    row = flowfmt.flow_row(drop)
    assert (row["source"], row["destination"], row["port"]) == ("x/a", "y/b", "80/TCP")
    assert (row["verdict"], row["drop_reason"], row["tcp_flags"]) == ("DROPPED",
                                                                       "POLICY_DENIED", "SYN")
    assert row["node"] and row["policies"] == "ingress denied by y/allow-from-y"
    world = next(f for f in ds.flows if f.source.identity == 2)
    assert flowfmt.flow_row(world)["source"] == "world"
    line = flowfmt.compact(drop)
    assert "x/a:" in line and "-> y/b:80" in line and "DROPPED" in line
    table = flowfmt.flows_frame(ds.flows[:20])
    assert list(table.columns) == flowfmt.ROW_COLUMNS and len(table) == 20
    csv = flowfmt.to_csv(table)
    assert csv.splitlines()[0].startswith("time,source,destination,port,verdict")
    assert len(csv.splitlines()) == 21


def test_sui_json_export_is_observe_json() -> None:
    import json

    ds = build_lab(time.time())
    text = data.flows_to_json_lines(ds.flows[:3])
    lines = text.splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert set(first) == {"flow", "node_name", "time"}
    assert first["flow"]["source"]["pod_name"] == ds.flows[0].source.pod_name
    assert first["node_name"] == ds.flows[0].node_name


# --------------------------------------------------------------------------- data


def test_sui_config_round_trips_through_the_environment() -> None:
    cfg = RelayConfig(address="relay:4245", tls_ca="/ca", tls_cert="/c", tls_key="/k",
                      tls_server_name="relay.sensilla", token_file="/t", timeout=3.5)
    assert RelayConfig.from_env(cfg.to_env()) == cfg
    assert RelayConfig.from_env({}) == RelayConfig()
    assert RelayConfig.from_env({"SENSILLA_UI_TIMEOUT": "nope"}).timeout == 10.0
    assert cfg.tls and not RelayConfig().tls


def test_sui_relay_error_kinds_from_status_codes() -> None:
    class Err(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._c, self._d = code, details

        def code(self) -> grpc.StatusCode:
            return self._c

        def details(self) -> str:
            return self._d

    cases = {grpc.StatusCode.UNAVAILABLE: "unavailable",
             grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
             grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
             grpc.StatusCode.INVALID_ARGUMENT: "invalid",
             grpc.StatusCode.RESOURCE_EXHAUSTED: "busy",
             grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
             grpc.StatusCode.DATA_LOSS: "internal"}
    for code, kind in cases.items():
        err = data.RelayError.from_rpc(Err(code, "why"), address="h:1", method="M")
        assert (err.kind, err.message, err.code, err.method) == (kind, "why", code.name, "M")
        assert err.title and err.hint
    with pytest.raises(ValueError):
        data.RelayError("nonsense", "x")


def test_sui_time_range_rounds_now_for_caching() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 7, 500000, tzinfo=UTC)
    tr = data.TimeRange.last(3600, now=now)
    assert tr.until == datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert tr.seconds == 3600
    assert data.default_step(tr) == 60
    assert data.default_step(data.TimeRange.last(7 * 86400, now=now)) == 10800
    assert data.default_step(data.TimeRange.last(300, now=now)) == 10


def test_sui_client_reads_every_rpc_of_the_fake_relay(relay: FakeRelay) -> None:
    c = data.RelayClient(RelayConfig(address=relay.address))
    try:
        assert c.server_status().connected_nodes == 2
        assert list(c.nodes()["name"]) == ["worker", "worker2"]
        assert c.namespaces() == ["kube-system", "monitoring", "x", "y", "z"]
        window = data.TimeRange.last(3600)
        assert not c.flow_rates(window, step_seconds=60).frame.empty
        assert not c.service_map(window).edges.empty
        drops = c.drop_summary(window, step_seconds=60)
        assert drops.step_seconds == 60 and not drops.top_pairs.empty
        page = c.search_flows(window, page_size=7)
        assert len(page.flows) == 7 and page.next_page_token == "7"
        flows = c.get_flows(number=5)
        assert len(flows) == 5
        assert [f.time.ToNanoseconds() for f in flows] == sorted(
            f.time.ToNanoseconds() for f in flows)
        assert len(c.endpoints(["x"])) == 3
        ans = c.explain("x/a", "y/b", 80, "TCP")
        assert not ans.allowed and ans.ingress.enforced and ans.ingress.selected_by == (
            "y/allow-from-y",)
        assert ans.last_observed is not None and ans.suggested_policy
    finally:
        c.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("suipki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=sui-ca",
             "-days", "2", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN=sui-{name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext",
                 cwd=d)
    return d


def test_sui_client_over_mutual_tls_with_token(pki: Path, tmp_path: Path) -> None:
    r = FakeRelay("empty", token="t0ken",
                  tls=((pki / "server.key").read_bytes(), (pki / "server.crt").read_bytes()),
                  client_ca=(pki / "ca.crt").read_bytes())
    address = r.start("127.0.0.1:0")
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    try:
        good = RelayConfig(address=address, tls_ca=str(pki / "ca.crt"),
                           tls_cert=str(pki / "client.crt"), tls_key=str(pki / "client.key"),
                           token_file=str(token), timeout=5)
        c = data.RelayClient(good)
        assert c.server_status().connected_nodes == 2
        c.close()
        # the right certificates but no token
        c = data.RelayClient(RelayConfig(address=address, tls_ca=good.tls_ca,
                                         tls_cert=good.tls_cert, tls_key=good.tls_key,
                                         timeout=5))
        with pytest.raises(data.RelayError) as err:
            c.server_status()
        assert err.value.kind == "unauthenticated"
        c.close()
        # no client certificate: the handshake fails
        c = data.RelayClient(RelayConfig(address=address, tls_ca=good.tls_ca,
                                         token_file=str(token), timeout=5))
        with pytest.raises(data.RelayError) as err:
            c.server_status()
        assert err.value.kind == "unavailable"
        c.close()
        # plaintext to a TLS relay
        c = data.RelayClient(RelayConfig(address=address, token_file=str(token), timeout=5))
        with pytest.raises(data.RelayError) as err:
            c.server_status()
        assert err.value.kind == "unavailable"
        c.close()
    finally:
        r.stop()


def test_sui_unusable_credentials_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(data.RelayError) as err:
        data.RelayClient(RelayConfig(tls_ca=str(tmp_path / "missing.pem")))
    assert err.value.kind == "config" and "missing.pem" in err.value.message
    with pytest.raises(data.RelayError) as err:
        data.RelayClient(RelayConfig(tls_ca=__file__, tls_cert=__file__))
    assert err.value.kind == "config" and "--tls-key" in err.value.message
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    c = data.RelayClient(RelayConfig(address="127.0.0.1:1", token_file=str(empty)))
    with pytest.raises(data.RelayError) as err:
        c.server_status()
    assert err.value.kind == "config" and "empty" in err.value.message
    c.close()


def test_sui_graph_group_ports_merges_a_pairs_ports_and_queries_each() -> None:
    workloads = pd.DataFrame([{"id": i, "namespace": i.split("/")[0], "name": i.split("/")[1],
                               "kind": "Pod", "identity": 0} for i in ("a/x", "b/y")])
    edges = pd.DataFrame([
        {"source_id": "a/x", "destination_id": "b/y", "protocol": p, "port": n,
         "verdict": "FORWARDED", "flows": f, "packets": f, "bytes": 10 * f, "drop_reasons": ""}
        for p, n, f in (("TCP", 80, 5), ("TCP", 443, 7), ("UDP", 53, 1))])
    (edge,) = graph.build_model(workloads, edges, group_ports=True).edges
    assert (edge.flows, edge.packets, edge.bytes) == (13, 13, 130)
    assert edge.ports == ("53/UDP", "80/TCP", "443/TCP")
    assert (edge.port, edge.protocol) == (0, "")
    assert edge.port_label == "53/UDP, 80/TCP, 443/TCP"
    q = graph.edge_flow_query(edge)
    assert (q["source_workload_id"], q["destination_workload_id"]) == ("a/x", "b/y")
    assert [(list(f.protocol), list(f.destination_port)) for f in q["whitelist"]] == [
        (["udp"], ["53"]), (["tcp"], ["80"]), (["tcp"], ["443"])]
    assert all(list(f.verdict) == [flow_pb2.FORWARDED] for f in q["whitelist"])
    single = graph.build_model(workloads, edges[edges["port"] == 80], group_ports=True).edges[0]
    assert (single.port, single.protocol, single.port_label) == (80, "TCP", "80/TCP")
    assert len(graph.build_model(workloads, edges).edges) == 3
