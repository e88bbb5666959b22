"""Unit tests of the lab's pure parts: spec, layout, state directory, SCTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensilla.lab import sctp
from sensilla.lab.layout import build_layout, host_if_name
from sensilla.lab.spec import SpecError, default_spec, parse_spec
from sensilla.lab.state import StateDir, StateError, parse_label_changes

pytestmark = pytest.mark.unit


def test_default_spec_is_the_netpol_model() -> None:
    spec = default_spec()
    assert [p.key for p in spec.pods] == [f"{n}/{p}" for n in "xyz" for p in "abc"]
    assert {n.name: n.labels for n in spec.namespaces}["y"] == {
        "kubernetes.io/metadata.name": "y",
        "ns": "y",
    }
    names = {q.name for q in spec.pods[0].ports}
    assert names == {f"serve-{p}-{t}" for p in (80, 81) for t in ("tcp", "udp", "sctp")}
    nodes = {p.node for p in spec.pods}
    assert nodes == set(spec.nodes) and len(nodes) == 2


def test_spec_round_trips() -> None:
    spec = default_spec()
    assert parse_spec(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"nodes": []}, "nodes"),
        ({"nodes": ["Bad_Name"]}, "nodes[0]"),
        ({"nodes": ["a", "a"]}, "nodes"),
        (
            {"nodes": ["a"], "namespaces": [{"name": "x"}], "pods": [{"namespace": "q"}]},
            "pods[0].namespace",
        ),
        (
            {
                "nodes": ["a"],
                "namespaces": [{"name": "x"}],
                "pods": [{"namespace": "x", "name": "p", "node": "b"}],
            },
            "pods[0].node",
        ),
        (
            {
                "nodes": ["a"],
                "namespaces": [{"name": "x"}],
                "pods": [
                    {
                        "namespace": "x",
                        "name": "p",
                        "node": "a",
                        "ports": [{"port": 80, "protocol": "ICMP"}],
                    }
                ],
            },
            "pods[0].ports[0].protocol",
        ),
        (
            {
                "nodes": ["a"],
                "namespaces": [{"name": "x"}],
                "pods": [{"namespace": "x", "name": "p", "node": "a", "ports": [{"port": 0}]}],
            },
            "pods[0].ports[0].port",
        ),
    ],
)
def test_spec_errors_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert str(err.value).startswith(field + ":")


def test_layout_addresses_and_names() -> None:
    layout = build_layout(default_spec(), "sensilla", 0)
    assert layout.relay_loopback == "127.0.0.1:4245"
    assert [n.name for n in layout.nodes] == ["sensilla-worker", "sensilla-worker2"]
    ips = [p.ipv4 for p in layout.pods] + [p.ipv6 for p in layout.pods]
    assert len(set(ips)) == len(ips)
    for p in layout.pods:
        assert p.host_if.startswith("lxc") and len(p.host_if) <= 15
        assert p.ipv4.startswith(f"10.244.{p.node.index}.")
    other = build_layout(default_spec(), "t1", 3)
    mine = {n.mgmt_root_v4 for n in layout.nodes} | {n.mgmt_node_v4 for n in layout.nodes}
    theirs = {n.mgmt_root_v4 for n in other.nodes} | {n.mgmt_node_v4 for n in other.nodes}
    assert not mine & theirs
    assert other.relay_loopback != layout.relay_loopback
    assert host_if_name("a", "x", "a") != host_if_name("b", "x", "a")


def test_state_dir_writes_stamp_revisions(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    r1 = state.put("namespaces", {"metadata": {"name": "x", "labels": {"ns": "x"}}})
    r2 = state.put("pods", {"metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}}})
    assert (r1, r2) == (1, 2)
    pod = state.read("pods", "x/a")
    assert pod is not None and pod["metadata"]["resourceVersion"] == "2"
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    uid = pod["metadata"]["uid"]
    state.put("pods", {"metadata": {"name": "a", "namespace": "x", "labels": {"pod": "b"}}})
    again = state.read("pods", "x/a")
    assert again is not None and again["metadata"]["uid"] == uid
    snap = state.snapshot()
    assert snap.revision == 3 and set(snap.objects["pods"]) == {"x/a"}
    assert json.loads((tmp_path / "pods" / "x" / "a.json").read_text())["metadata"]["labels"] == {
        "pod": "b"
    }
    state.delete("pods", "x/a")
    assert state.read("pods", "x/a") is None and state.revision() == 4


def test_label_semantics_follow_kubectl(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.put("pods", {"metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}}})
    state.label("pods", "x/a", ["app=web"])
    with pytest.raises(StateError, match="--overwrite"):
        state.label("pods", "x/a", ["pod=b"])
    state.label("pods", "x/a", ["pod=b"], overwrite=True)
    state.label("pods", "x/a", ["app-"])
    obj = state.read("pods", "x/a")
    assert obj is not None and obj["metadata"]["labels"] == {"pod": "b"}
    with pytest.raises(StateError, match="not found"):
        state.label("pods", "x/a", ["app-"])
    with pytest.raises(StateError, match="not found"):
        state.label("pods", "x/zz", ["a=b"])


@pytest.mark.parametrize("bad", ["=x", "a b=c", "k=v v", "-", "a/b/c=d", "k=" + "x" * 64])
def test_label_changes_reject_bad_input(bad: str) -> None:
    with pytest.raises(StateError):
        parse_label_changes([bad])


def test_state_keys_are_confined(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    for key in ("../x", "x/../../y", "a/b/c"):
        with pytest.raises(StateError):
            state.object_path("pods", key)


def test_crc32c_known_vector() -> None:
    assert sctp.crc32c(b"123456789") == 0xE3069283


def test_sctp_init_and_ack_round_trip() -> None:
    init = sctp.parse(sctp.build_init(40000, 80, 0xDEADBEEF))
    assert init is not None and init.checksum_ok
    assert (init.sport, init.dport, init.vtag, init.chunk_type, init.initiate_tag) == (
        40000,
        80,
        0,
        sctp.INIT,
        0xDEADBEEF,
    )
    ack = sctp.parse(sctp.build_init_ack(80, 40000, 0xDEADBEEF, 7))
    assert ack is not None and ack.checksum_ok
    assert (ack.vtag, ack.chunk_type, ack.initiate_tag) == (0xDEADBEEF, sctp.INIT_ACK, 7)


@given(st.binary(max_size=64))
def test_sctp_parse_never_crashes(data: bytes) -> None:
    pkt = sctp.parse(data)
    assert pkt is None or isinstance(pkt.checksum_ok, bool)


@given(st.integers(1, 65535), st.integers(1, 65535), st.integers(1, 2**32 - 1))
def test_sctp_corruption_is_detected(sport: int, dport: int, tag: int) -> None:
    raw = bytearray(sctp.build_init(sport, dport, tag))
    raw[-1] ^= 0x01
    parsed = sctp.parse(bytes(raw))
    assert parsed is not None and not parsed.checksum_ok
