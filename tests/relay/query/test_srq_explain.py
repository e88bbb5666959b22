"""Explain and ListEndpoints from the relay's own watch of a lab state directory (no
root: the state directory is written directly), checked against the one policy
model; suggested policies are applied and must allow exactly the pair asked about;
the last observed flow comes from the store; `sensilla policy explain --relay`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from collector.identity import identities_for
from collector.policy.explain import explain_dict, explain_text
from collector.policy.verdict import verdict
from collector.sources.lab import LabSource
from relay.ingest.synthetic import FlowFactory
from sensilla.cli.main import main as cli
from sensilla.protos import flow_pb2, ingest_pb2, query_pb2, query_pb2_grpc
from tests.relay.observer.support import (
    HeldCollector,
    RelayThread,
    chdb_url,
    make_state_dir,
    running_relay,
)

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


DENY_INGRESS_Y = policy("y", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
DENY_EGRESS_X = policy("x", "deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
ALLOW_X_TO_YB = policy(
    "y",
    "allow-x",
    {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [
            {
                "from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                "ports": [{"port": 81, "protocol": "TCP"}],
            }
        ],
    },
)


class Env:
    def __init__(self, relay: RelayThread, state: Any, tmp: Path) -> None:
        self.relay = relay
        self.state = state
        self.tmp = tmp
        self.channel = grpc.insecure_channel(relay.address)
        self.q = query_pb2_grpc.QueryStub(self.channel)

    def apply(self, *docs: dict[str, Any]) -> None:
        self.state.apply(
            [
                ("networkpolicies", d, f"{d['metadata']['namespace']}/{d['metadata']['name']}")
                for d in docs
            ]
        )

    def reset(self) -> None:
        self.state.apply(
            [("networkpolicies", None, k) for k in self.state.objects("networkpolicies")]
        )

    def model(self, src: str, dst: str, port: int | None, proto: str = "TCP", fam: int = 4) -> Any:
        return verdict(src, dst, port, proto, LabSource(self.state.path).cluster_state(), fam)

    def explain(self, src: str, dst: str, port: int, proto: str = "TCP", **kw: Any) -> Any:
        req = query_pb2.ExplainRequest(source=src, destination=dst, port=port, protocol=proto, **kw)
        return self.q.Explain(req, timeout=30)


@pytest.fixture
def env(chdb_dir: Path, tmp_path: Path) -> Iterator[Env]:
    state = make_state_dir(tmp_path / "state")
    with running_relay(
        chdb_url(chdb_dir, "srq_explain"), source=f"lab:{tmp_path / 'state'}"
    ) as relay:
        e = Env(relay, state, tmp_path)
        try:
            yield e
        finally:
            e.channel.close()


def _same_as_model(resp: query_pb2.ExplainResponse, v: Any) -> None:
    d = explain_dict(v)
    assert resp.allowed == d["allowed"] and resp.forwarded == d["forwarded"]
    assert resp.explanation == explain_text(v)
    for side, got in (("egress", resp.egress), ("ingress", resp.ingress)):
        want = d[side]
        assert got.reason == want["reason"] and got.allowed == want["allowed"]
        assert got.audit == want["audit"] and got.pod == (want["pod"] or "")
        assert [f"{r.namespace}/{r.name}" for r in got.selected_by] == want["selected_by"]
        assert [f"{r.namespace}/{r.name} {r.rule}" for r in got.allowed_by] == [
            m["rule"] for m in want["allowed_by"]
        ]


def test_srq_explain_equals_model_and_suggestions_allow_exactly_the_pair(env: Env) -> None:
    cases = [("x/a", "y/b", 80, "TCP"), ("z/c", "x/a", 81, "UDP"), ("y/a", "y/b", 80, "SCTP")]
    # nothing applies: everything allowed, nothing suggested
    for s, d, port, proto in cases:
        resp = env.explain(s, d, port, proto)
        _same_as_model(resp, env.model(s, d, port, proto))
        assert resp.allowed and not resp.suggested_policy
        assert resp.revision == env.state.revision()
    env.apply(DENY_INGRESS_Y, DENY_EGRESS_X, ALLOW_X_TO_YB)
    for s, d, port, proto in [*cases, ("x/a", "y/b", 81, "TCP"), ("x/b", "z/a", 80, "TCP")]:
        _same_as_model(env.explain(s, d, port, proto), env.model(s, d, port, proto))
    # x/a -> y/b:80 is denied on both sides: the suggestion has two policies
    resp = env.explain("x/a", "y/b", 80)
    assert not resp.allowed and not resp.forwarded
    assert resp.ingress.enforced and resp.ingress.reason == "default-deny"
    assert [r.name for r in resp.ingress.selected_by] == ["allow-x", "deny-ingress"]
    docs = list(yaml.safe_load_all(resp.suggested_policy))
    assert [(x["metadata"]["namespace"], x["spec"]["policyTypes"]) for x in docs] == [
        ("x", ["Egress"]),
        ("y", ["Ingress"]),
    ]
    before = {(s, d): env.model(s, d, 80).allowed for s in PODS for d in PODS if s != d}
    env.apply(*docs)
    after = {(s, d): env.model(s, d, 80).allowed for s in PODS for d in PODS if s != d}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("x/a", "y/b")}, changed
    assert env.explain("x/a", "y/b", 80).allowed
    assert not env.explain("x/a", "y/b", 82).allowed  # only that port
    assert not env.explain("x/a", "y/b", 80, "UDP").allowed  # only that protocol


def test_srq_explain_audit_icmp_addresses_and_errors(env: Env) -> None:
    env.apply(DENY_INGRESS_Y)
    env.state.label("namespaces", "y", ["policy.sensilla.io/audit=true"], overwrite=True)
    resp = env.explain("x/a", "y/c", 80)
    assert not resp.allowed and resp.forwarded and resp.audit and resp.ingress.audit
    assert resp.suggested_policy  # still worth fixing
    _same_as_model(resp, env.model("x/a", "y/c", 80))
    resp = env.explain("x/a", "y/c", 0, "ICMP")
    _same_as_model(resp, env.model("x/a", "y/c", None, "ICMP"))
    assert "ports" not in yaml.safe_load(resp.suggested_policy)["spec"]["ingress"][0]
    # addresses: a pod's address is that pod, others are outside the cluster
    pod_ip = str(LabSource(env.state.path).cluster_state().pods["y/b"].ips[0])
    _same_as_model(env.explain("x/a", pod_ip, 80), env.model("x/a", pod_ip, 80))
    env.apply(DENY_EGRESS_X)
    resp = env.explain("x/a", "203.0.113.9", 443)
    assert not resp.allowed and resp.egress.reason == "default-deny"
    doc = yaml.safe_load(resp.suggested_policy)
    assert doc["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "203.0.113.9/32"}}]
    v6 = env.explain("x/a", "2001:db8::9", 443, family=6)
    assert "2001:db8::9/128" in v6.suggested_policy
    for req, field in [
        (query_pb2.ExplainRequest(source="x/nope", destination="y/b", port=80), "source"),
        (query_pb2.ExplainRequest(source="x/a", destination="", port=80), "destination"),
        (query_pb2.ExplainRequest(source="x/a", destination="y/b", port=0), "port"),
        (query_pb2.ExplainRequest(source="x/a", destination="y/b", port=70000), "port"),
        (
            query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80, protocol="XYZ"),
            "protocol",
        ),
        (query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80, family=5), "family"),
        (
            query_pb2.ExplainRequest(source="x/a", destination="y/b", port=1, protocol="ICMP"),
            "port",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            env.q.Explain(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field), err.value.details()


def test_srq_explain_last_observed_and_endpoints(env: Env) -> None:
    state = LabSource(env.state.path).cluster_state()
    # endpoints: every pod, its identity as every node computes it, its named ports
    eps = env.q.ListEndpoints(query_pb2.ListEndpointsRequest(), timeout=10).endpoints
    ids = identities_for(state)
    assert [f"{e.namespace}/{e.name}" for e in eps] == sorted(state.pods)
    for e in eps:
        pod = state.pods[f"{e.namespace}/{e.name}"]
        assert e.identity == ids.by_pod[f"{e.namespace}/{e.name}"] >= 256
        assert e.node == pod.node and list(e.ips) == [str(a) for a in pod.ips]
        assert dict(e.labels) == dict(pod.labels)
        assert {(p.name, p.port, p.protocol) for p in e.ports} >= {("serve-80-tcp", 80, "TCP")}
    only_y = env.q.ListEndpoints(query_pb2.ListEndpointsRequest(namespaces=["y"]), timeout=10)
    assert {e.namespace for e in only_y.endpoints} == {"y"}
    # the last flow stored for the pair and port
    assert not env.explain("x/a", "y/b", 80).HasField("last_observed")
    c = HeldCollector(env.relay.address, "srq-explain", 10**18)
    try:
        c.wait_hello_ack()
        ff = FlowFactory("srq-explain", c.boot_id)
        flows = []
        for seq in range(1, 4):
            f = ff.make(seq, time.time_ns() - 10**9 + seq)
            f.source.namespace, f.source.pod_name = "x", "a"
            f.destination.namespace, f.destination.pod_name = "y", "b"
            f.l4.Clear()
            f.l4.TCP.destination_port = 80 if seq < 3 else 81
            f.l4.TCP.source_port = 40000 + seq
            f.is_reply.value = False
            f.verdict = flow_pb2.DROPPED if seq == 2 else flow_pb2.FORWARDED
            flows.append(f)
        c.push(ingest_pb2.Batch(boot_id=c.boot_id, sequence=1, flows=flows))
    finally:
        c.close()
    resp = env.explain("x/a", "y/b", 80)
    assert resp.last_observed.uuid == flows[1].uuid  # the newest on port 80
    assert resp.last_observed.verdict == flow_pb2.DROPPED
    assert env.explain("x/a", "y/b", 81).last_observed.uuid == flows[2].uuid
    assert not env.explain("x/a", "y/b", 80, "UDP").HasField("last_observed")


def test_srq_policy_explain_cli_through_the_relay(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.apply(DENY_INGRESS_Y)
    capsys.readouterr()
    args = ["policy", "explain", "--from", "x/a", "--to", "y/b", "--port", "80"]
    assert cli([*args, "--relay", env.relay.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith(explain_text(env.model("x/a", "y/b", 80)))
    assert f"Last observed (relay {env.relay.address}): no such flow stored" in out
    assert "kind: NetworkPolicy" in out
    assert cli([*args, "--relay", env.relay.address, "-o", "json"]) == 0
    via = json.loads(capsys.readouterr().out)
    assert cli([*args, "--state-dir", str(env.state.path), "-o", "json"]) == 0
    local = json.loads(capsys.readouterr().out)
    for k in ("from", "to", "port", "protocol", "allowed", "forwarded", "verdict", "revision"):
        assert via[k] == local[k], k
    for side in ("egress", "ingress"):
        for k in ("direction", "pod", "reason", "allowed", "audit", "selected_by"):
            assert via[side][k] == local[side][k], (side, k)
        assert [m["rule"] for m in via[side]["allowed_by"]] == [
            m["rule"] for m in local[side]["allowed_by"]
        ]
    assert via["suggested_policy"] and via["relay"] == env.relay.address
    assert cli(["policy", "explain", "--from", "x/nope", "--to", "y/b", "--port", "80",
                "--relay", env.relay.address]) == 2  # fmt: skip
    assert "source" in capsys.readouterr().err


def test_srq_explain_without_source_is_failed_precondition(chdb_dir: Path) -> None:
    with (
        running_relay(chdb_url(chdb_dir, "srq_nosource")) as relay,
        grpc.insecure_channel(relay.address) as ch,
    ):
        q = query_pb2_grpc.QueryStub(ch)
        for call, req in (
            (q.Explain, query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80)),
            (q.ListEndpoints, query_pb2.ListEndpointsRequest()),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call(req, timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--source" in (err.value.details() or "")
