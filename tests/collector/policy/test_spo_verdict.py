"""The verdict function and explain on hand-made clusters: selectors, peers, ports,
ipBlocks (IPv4 and IPv6, pod addresses), per-direction default deny, union, own
node, audit."""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from collector.policy.cluster import ClusterState, ContainerPort, Namespace, Node, Pod
from collector.policy.explain import explain_dict, explain_text
from collector.policy.parse import parse_documents
from collector.policy.selectors import LabelSelector, Requirement
from collector.policy.verdict import verdict

pytestmark = pytest.mark.unit
ip = ipaddress.ip_address


def cluster(*policies: str) -> ClusterState:
    web_ports = (ContainerPort(8080, "TCP", "http"), ContainerPort(53, "UDP", "dns"))
    api_ports = (ContainerPort(9090, "TCP", "http"),)
    pods = [
        Pod("shop", "web", {"app": "web"}, "n1", (ip("10.0.1.10"), ip("fd00::1:10")), web_ports),
        Pod("shop", "api", {"app": "api"}, "n2", (ip("10.0.2.10"), ip("fd00::2:10")), api_ports),
        Pod("shop", "api2", {"app": "api"}, "n1", (ip("10.0.1.11"), ip("fd00::1:11")), ()),
        Pod("ops", "mon", {"app": "mon"}, "n2", (ip("10.0.2.11"), ip("fd00::2:11")), ()),
    ]
    nodes = [Node("n1", (ip("172.18.0.2"), ip("10.0.1.1"))), Node("n2", (ip("172.18.0.3"),))]
    nss = [Namespace("shop", {"team": "web"}), Namespace("ops", {"team": "ops"})]
    docs = []
    for text in policies:
        docs += [p.policy for p in parse_documents(text, default_namespace="shop")]
    return ClusterState.build(nodes, nss, pods, docs)


def pol(spec: str, name: str = "p", namespace: str = "shop") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": yaml.safe_load(spec),
        }
    )


def allowed(
    state: ClusterState, src: str, dst: str, port: int | None = 80, proto: str = "TCP", fam: int = 4
) -> bool:
    return verdict(src, dst, port, proto, state, fam).allowed


def test_spo_selector_operators() -> None:
    labels = {"app": "web", "tier": "front"}
    assert LabelSelector().matches(labels)
    assert LabelSelector.of({"app": "web"}).matches(labels)
    assert not LabelSelector.of({"app": "web", "x": "y"}).matches(labels)
    assert LabelSelector.of(None, Requirement("app", "In", ("web", "api"))).matches(labels)
    assert not LabelSelector.of(None, Requirement("app", "NotIn", ("web",))).matches(labels)
    assert LabelSelector.of(None, Requirement("missing", "NotIn", ("web",))).matches(labels)
    assert not LabelSelector.of(None, Requirement("missing", "In", ("web",))).matches(labels)
    assert LabelSelector.of(None, Requirement("tier", "Exists")).matches(labels)
    assert LabelSelector.of(None, Requirement("missing", "DoesNotExist")).matches(labels)
    assert not LabelSelector.of(None, Requirement("tier", "DoesNotExist")).matches(labels)


def test_spo_unselected_pods_unaffected() -> None:
    s = cluster(pol("{podSelector: {matchLabels: {app: api}}, policyTypes: [Ingress]}"))
    assert not allowed(s, "shop/web", "shop/api")
    assert allowed(s, "shop/api", "shop/web")  # only api is isolated, only for ingress
    assert allowed(s, "ops/mon", "shop/web")


def test_spo_per_direction_default_deny() -> None:
    s = cluster(pol("{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}"))
    assert not allowed(s, "shop/web", "shop/api")
    assert allowed(s, "shop/api", "shop/web")  # ingress to web not isolated
    v = verdict("shop/web", "shop/api", 80, "TCP", s)
    assert v.egress.reason == "default-deny" and v.egress.selecting == ("shop/p",)
    assert v.ingress.reason == "not-isolated"


def test_spo_and_versus_or_peers() -> None:
    and_peer = pol(
        """
podSelector: {matchLabels: {app: api}}
ingress:
- from: [{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: web}}}]
"""
    )
    or_peers = pol(
        """
podSelector: {matchLabels: {app: api}}
ingress:
- from: [{namespaceSelector: {matchLabels: {team: ops}}}, {podSelector: {matchLabels: {app: web}}}]
"""
    )
    s = cluster(and_peer)
    assert not allowed(s, "shop/web", "shop/api")  # right pod, wrong namespace
    assert not allowed(s, "ops/mon", "shop/api")  # right namespace, wrong pod
    s = cluster(or_peers)
    assert allowed(s, "shop/web", "shop/api")
    assert allowed(s, "ops/mon", "shop/api")
    assert not allowed(s, "shop/api2", "shop/api")


def test_spo_empty_selectors() -> None:
    # An empty podSelector in a peer: every pod of the policy's namespace.
    s = cluster(pol("{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"))
    assert allowed(s, "shop/web", "shop/api")
    assert not allowed(s, "ops/mon", "shop/api")
    # An empty namespaceSelector: every pod everywhere (but not external addresses).
    s = cluster(pol("{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"))
    assert allowed(s, "ops/mon", "shop/api")
    assert not allowed(s, "192.0.2.1", "shop/api")
    # No `from` at all: everything, external addresses included.
    s = cluster(pol("{podSelector: {}, ingress: [{}]}"))
    assert allowed(s, "192.0.2.1", "shop/api")


def test_spo_union_of_policies() -> None:
    a = pol("{podSelector: {matchLabels: {app: api}}, ingress: [{ports: [{port: 80}]}]}", "a")
    b = pol("{podSelector: {}, ingress: [{ports: [{port: 81}]}]}", "b")
    s = cluster(a, b)
    assert allowed(s, "ops/mon", "shop/api", 80) and allowed(s, "ops/mon", "shop/api", 81)
    assert not allowed(s, "ops/mon", "shop/api", 82)
    assert not allowed(s, "ops/mon", "shop/web", 80) and allowed(s, "ops/mon", "shop/web", 81)


def test_spo_named_ports_resolve_per_destination() -> None:
    s = cluster(pol("{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}"))
    assert allowed(s, "shop/web", "shop/api", 9090)  # api's http is 9090
    assert not allowed(s, "shop/web", "shop/api", 8080)
    assert allowed(s, "shop/api", "shop/web", 8080)  # web's http is 8080
    assert not allowed(s, "shop/api", "shop/api2", 9090)  # api2 has no named ports
    assert not allowed(s, "shop/web", "192.0.2.1", 8080)  # not a pod: no named port
    s = cluster(pol("{podSelector: {}, ingress: [{ports: [{port: dns, protocol: UDP}]}]}"))
    assert allowed(s, "ops/mon", "shop/web", 53, "UDP")
    assert not allowed(s, "ops/mon", "shop/web", 53, "TCP")


def test_spo_end_port_and_protocols() -> None:
    s = cluster(
        pol("{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8080, protocol: UDP}]}]}")
    )
    assert allowed(s, "ops/mon", "shop/web", 8000, "UDP")
    assert allowed(s, "ops/mon", "shop/web", 8080, "UDP")
    assert not allowed(s, "ops/mon", "shop/web", 8081, "UDP")
    assert not allowed(s, "ops/mon", "shop/web", 8000, "TCP")
    assert not allowed(s, "ops/mon", "shop/web", 8000, "SCTP")
    assert not allowed(s, "ops/mon", "shop/web", None, "ICMP")
    s = cluster(pol("{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"))
    assert allowed(s, "ops/mon", "shop/web", None, "ICMP")  # no ports: every protocol


def test_spo_ip_blocks_match_pod_addresses_both_families() -> None:
    spec = """
podSelector: {matchLabels: {app: api}}
ingress:
- from:
  - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.11/32]}
  - ipBlock: {cidr: "fd00::/64", except: ["fd00::1:11/128"]}
"""
    s = cluster(pol(spec))
    for fam in (4, 6):
        assert allowed(s, "shop/web", "shop/api", fam=fam)
        assert allowed(s, "ops/mon", "shop/api", fam=fam)  # by address, whatever the labels
        assert not allowed(s, "shop/api2", "shop/api", fam=fam)  # the except hole
    assert allowed(s, "10.0.9.9", "shop/api")
    assert not allowed(s, "10.1.0.1", "shop/api")
    assert not allowed(s, "fd00:1::1", "shop/api", fam=6)


def test_spo_own_node_always_allowed() -> None:
    s = cluster(pol("{podSelector: {}, policyTypes: [Ingress, Egress]}"))
    assert allowed(s, "10.0.1.1", "shop/web")  # web runs on n1
    assert allowed(s, "172.18.0.2", "shop/web")
    assert allowed(s, "shop/web", "172.18.0.2")
    assert not allowed(s, "172.18.0.3", "shop/web")  # another node
    assert not allowed(s, "shop/web", "shop/api2")  # same node, but a pod


def test_spo_audit_mode() -> None:
    s = cluster(pol("{podSelector: {}, policyTypes: [Ingress]}"))
    s.namespaces["shop"] = Namespace("shop", {"team": "web"}, {"policy.sensilla.io/audit": "true"})
    v = verdict("ops/mon", "shop/web", 80, "TCP", s)
    assert not v.allowed and v.forwarded and v.audited
    assert "audit mode" in explain_text(v)
    assert explain_dict(v)["verdict"] == "AUDIT"


def test_spo_explain_names_rules_and_default_deny() -> None:
    a = pol(
        "{podSelector: {matchLabels: {app: api}}, ingress: [{from: [{podSelector: "
        "{matchLabels: {app: web}}}], ports: [{port: 80}]}]}",
        "allow-web",
    )
    s = cluster(a, pol("{podSelector: {}}", "deny-all"))
    v = verdict("shop/web", "shop/api", 80, "TCP", s)
    text = explain_text(v)
    assert text.startswith("shop/web -> shop/api TCP/80: ALLOWED")
    assert "shop/allow-web spec.ingress[0].from[0] ports[0]" in text
    assert "pods with app=web in namespace shop" in text
    v = verdict("ops/mon", "shop/api", 80, "TCP", s)
    text = explain_text(v)
    assert "DENIED" in text and "default deny" in text
    assert "shop/allow-web, shop/deny-all" in text
    d = explain_dict(v)
    assert d["verdict"] == "DROPPED" and d["ingress"]["selected_by"] == [
        "shop/allow-web",
        "shop/deny-all",
    ]
