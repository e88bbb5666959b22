"""The Kubernetes source against a local server speaking list/watch (sk8_apiserver)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sk8_apiserver import FakeAPIServer

from collector.sources.k8s_watch import Backoff, WatchConfig
from collector.sources.kubernetes import KubernetesSource, SourceError, client_configuration

pytestmark = pytest.mark.unit

FAST = WatchConfig(
    watch_timeout=30.0,
    read_slack=10.0,
    connect_timeout=5.0,
    list_timeout=10.0,
    page_size=500,
    backoff_base=0.02,
    backoff_cap=0.2,
)
WAIT = 20.0


def pod(ns: str, name: str, ip: str, node: str = "n1", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": dict(labels)},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}
            ],
        },
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels)}}


def seed(server: FakeAPIServer) -> None:
    server.put("nodes", {"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}})
    for ns in ("x", "y"):
        server.put("namespaces", namespace(ns, ns=ns))
    server.put("pods", pod("x", "a", "10.0.0.1", pod="a"))
    server.put("pods", pod("x", "b", "10.0.0.2", pod="b"))
    server.put("pods", pod("y", "a", "10.0.1.1", pod="a"))


@pytest.fixture
def server() -> Iterator[FakeAPIServer]:
    s = FakeAPIServer().start()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_source() -> Iterator[Callable[..., KubernetesSource]]:
    made: list[KubernetesSource] = []

    def make(srv: FakeAPIServer, config: WatchConfig = FAST, **kw: Any) -> KubernetesSource:
        src = KubernetesSource(srv.configuration(), config=config, **kw)
        made.append(src)
        return src.start()

    try:
        yield make
    finally:
        for s in made:
            s.close()


def wait_until(src: KubernetesSource, cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Wait on the source's revision (and a short poll) until `cond` holds."""
    import time

    end = time.monotonic() + timeout
    while not cond():
        left = end - time.monotonic()
        if left <= 0:
            return False
        src.wait(src.revision, timeout=min(left, 0.1))
    return True


def same_as_server(src: KubernetesSource, server: FakeAPIServer, kind: str = "pods") -> bool:
    mine = {k: o["metadata"]["resourceVersion"] for k, o in src.objects(kind).items()}
    with server.cond:
        theirs = {k: o["metadata"]["resourceVersion"] for k, o in server.objects[kind].items()}
    return mine == theirs


def requests_for(server: FakeAPIServer, path: str, watch: bool) -> list[dict[str, str]]:
    with server.cond:
        return [q for p, q in server.requests if p == path and (q.get("watch") == "true") == watch]


# --- basic list/watch --------------------------------------------------------------------
def test_sk8_list_then_pod_add_update_delete(server: FakeAPIServer, make_source: Any) -> None:
    seed(server)
    src = make_source(server)
    assert src.wait_synced(WAIT)
    assert set(src.objects("pods")) == {"x/a", "x/b", "y/a"}
    assert set(src.objects("namespaces")) == {"x", "y"}
    obj = src.objects("pods")["x/a"]
    # list items arrive without apiVersion/kind; the source restores them
    assert obj["apiVersion"] == "v1" and obj["kind"] == "Pod"
    assert "managedFields" not in obj["metadata"]
    seen: list[tuple[int, str, list[Any]]] = []
    src.subscribe(lambda rev, kind, changes: seen.append((rev, kind, changes)))

    # add
    rev0 = src.revision
    server.put("pods", pod("x", "c", "10.0.0.3", pod="c"))
    assert wait_until(src, lambda: "x/c" in src.objects("pods"))
    assert src.revision > rev0
    assert seen[-1][1] == "pods" and seen[-1][2][0][:2] == ("ADDED", "x/c")
    state = src.cluster_state()
    assert str(state.pod("x/c").ips[0]) == "10.0.0.3"

    # update
    rev1 = src.revision
    server.label("pods", "x/c", tier="web")
    assert wait_until(src, lambda: src.objects("pods")["x/c"]["metadata"]["labels"].get("tier"))
    assert src.revision > rev1
    assert seen[-1][2][0][:2] == ("MODIFIED", "x/c")
    assert src.cluster_state().pod("x/c").labels == {"pod": "c", "tier": "web"}

    # delete
    rev2 = src.revision
    server.delete("pods", "x/c")
    assert wait_until(src, lambda: "x/c" not in src.objects("pods"))
    assert src.revision > rev2
    assert seen[-1][2][0][:2] == ("DELETED", "x/c")
    assert "x/c" not in src.cluster_state().pods
    # the watch resumed from the list's resourceVersion, with bookmarks asked for
    watches = requests_for(server, "/api/v1/pods", watch=True)
    assert watches and watches[0]["allowWatchBookmarks"] == "true"
    assert int(watches[0]["resourceVersion"]) >= 105
    assert 30 <= int(watches[0]["timeoutSeconds"]) < 60


def test_sk8_every_kind_is_watched(server: FakeAPIServer, make_source: Any) -> None:
    seed(server)
    server.put("services", {"metadata": {"namespace": "x", "name": "web"},
                            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    server.put("endpointslices", {
        "metadata": {"namespace": "x", "name": "web-abc",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "namespace": "x", "name": "a"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    server.put("networkpolicies", {"metadata": {"namespace": "x", "name": "deny"},
                                   "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    src = make_source(server)
    assert src.wait_synced(WAIT)
    snap = src.snapshot()
    assert set(snap.objects) == {
        "nodes", "namespaces", "pods", "services", "endpointslices", "networkpolicies"}
    assert snap.get("networkpolicies", "x/deny")["apiVersion"] == "networking.k8s.io/v1"
    assert snap.get("endpointslices", "x/web-abc")["kind"] == "EndpointSlice"
    assert "x/deny" in src.cluster_state().policies
    svc = src.services()
    assert str(svc.lookup("10.96.0.10")) == "x/web"
    assert str(svc.lookup("10.0.0.1")) == "x/web"
    assert [str(b.address) for b in svc.backends("10.96.0.10", 80)] == ["10.0.0.1"]
    assert svc.backends("10.96.0.10", 80)[0].port == 8080
    # the index is rebuilt after a change
    server.delete("endpointslices", "x/web-abc")
    assert wait_until(src, lambda: src.services().lookup("10.0.0.1") is None)
    assert str(src.services().lookup("10.96.0.10")) == "x/web"


def test_sk8_paginated_list(server: FakeAPIServer, make_source: Any) -> None:
    for i in range(1203):
        server.put("pods", pod("x", f"p{i}", f"10.1.{i // 250}.{i % 250 + 1}"))
    src = make_source(server, kinds=("pods",))
    assert src.wait_synced(WAIT)
    assert len(src.objects("pods")) == 1203
    lists = requests_for(server, "/api/v1/pods", watch=False)
    assert [q.get("limit") for q in lists] == ["500"] * 3
    assert "continue" not in lists[0] and lists[1]["continue"] and lists[2]["continue"]


# --- faults ------------------------------------------------------------------------------
def test_sk8_dropped_watch_resumes_and_loses_nothing(
    server: FakeAPIServer, make_source: Any
) -> None:
    seed(server)
    src = make_source(server, kinds=("pods",))
    assert src.wait_synced(WAIT)
    assert server.wait_watches(1)
    for round_ in range(3):
        server.fail_next(2, 503)  # the next reconnects fail: the source backs off
        server.drop_watches()
        # changes made while the source is disconnected
        server.put("pods", pod("x", f"new{round_}", f"10.0.2.{round_ + 1}"))
        server.label("pods", "x/a", round=str(round_))
        assert wait_until(src, lambda: same_as_server(src, server))
    st = src.status()["kinds"]["pods"]
    assert st["lists"] == 1, "a dropped watch resumes from its resourceVersion, no relist"
    assert st["errors"] >= 3 and st["gone"] == 0
    rvs = [int(q["resourceVersion"]) for q in requests_for(server, "/api/v1/pods", watch=True)]
    assert rvs == sorted(rvs)


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
def test_sk8_gone_relists(gone_as_http: bool, make_source: Any) -> None:
    server = FakeAPIServer(gone_as_http=gone_as_http).start()
    try:
        seed(server)
        src = make_source(server, kinds=("pods", "namespaces"))
        assert src.wait_synced(WAIT)
        assert server.wait_watches(2)
        deleted: list[str] = []
        src.subscribe(lambda rev, kind, ch: deleted.extend(k for e, k, _ in ch if e == "DELETED"))
        # while the watch is down: a delete, an add, then history is compacted away
        server.unavailable = True
        server.drop_watches()
        server.delete("pods", "x/b")
        server.put("pods", pod("x", "late", "10.0.0.9"))
        server.compact()
        assert wait_until(src, lambda: src.status()["kinds"]["pods"]["errors"] >= 2)
        server.unavailable = False
        assert wait_until(
            src, lambda: same_as_server(src, server) and src.status()["kinds"]["pods"]["gone"]
        )
        st = src.status()["kinds"]["pods"]
        assert st["gone"] >= 1 and st["lists"] == 2
        # the relist reported the deletion that happened while disconnected
        assert "x/b" in deleted
        assert set(src.objects("pods")) == {"x/a", "y/a", "x/late"}
        # and the source keeps watching after the relist
        server.put("pods", pod("y", "after", "10.0.1.9"))
        assert wait_until(src, lambda: "y/after" in src.objects("pods"))
    finally:
        server.close()


def test_sk8_bookmark_avoids_relist(server: FakeAPIServer, make_source: Any) -> None:
    seed(server)
    src = make_source(server, kinds=("pods", "namespaces"))
    assert src.wait_synced(WAIT)
    assert server.wait_watches(2)
    # pods change a lot while namespaces do not: the namespace watch's bookmark
    # moves its resourceVersion forward, so compaction does not force a relist
    for i in range(5):
        server.put("pods", pod("x", f"p{i}", f"10.0.3.{i + 1}"))
    assert wait_until(src, lambda: same_as_server(src, server))
    server.bookmark()
    ns_reflector = next(r for r in src._reflectors if r.rk.name == "namespaces")
    assert wait_until(src, lambda: ns_reflector.stats.bookmarks >= 1)
    with server.cond:
        now = server.rv
    assert int(ns_reflector.resource_version) == now
    server.compact()
    server.drop_watches()
    server.put("namespaces", namespace("z"))
    assert wait_until(src, lambda: "z" in src.objects("namespaces"))
    st = src.status()["kinds"]["namespaces"]
    assert st["lists"] == 1 and st["gone"] == 0


def test_sk8_errors_and_slow_responses_back_off_then_sync(
    server: FakeAPIServer, make_source: Any
) -> None:
    seed(server)
    server.fail_next(5, 500)
    server.delay = 0.3
    src = make_source(server, kinds=("pods",))
    assert src.wait_synced(WAIT)
    assert src.status()["kinds"]["pods"]["errors"] == 5
    server.delay = 0.0
    server.put("pods", pod("x", "z", "10.0.0.26"))
    assert wait_until(src, lambda: "x/z" in src.objects("pods"))


def test_sk8_list_slower_than_read_timeout_retries(
    server: FakeAPIServer, make_source: Any
) -> None:
    seed(server)
    server.delay = 1.5
    cfg = WatchConfig(watch_timeout=30, list_timeout=0.5, backoff_base=0.05, backoff_cap=0.2)
    src = make_source(server, cfg, kinds=("pods",))
    assert wait_until(src, lambda: src.status()["kinds"]["pods"]["errors"] >= 2)
    assert not src.synced
    server.delay = 0.0
    assert src.wait_synced(WAIT)
    assert set(src.objects("pods")) == {"x/a", "x/b", "y/a"}


def test_sk8_backoff_grows_with_jitter_and_caps() -> None:
    import random

    b = Backoff(0.5, 8.0, random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    for n, d in enumerate(delays):
        full = min(8.0, 0.5 * 2**n)
        assert full / 2 <= d <= full
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.5


# --- configuration ---------------------------------------------------------------------
def test_sk8_kubeconfig(server: FakeAPIServer, tmp_path: Path) -> None:
    seed(server)
    kc = tmp_path / "config"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters: [{{name: c, cluster: {{server: '{server.url}'}}}}]\n"
        "users: [{name: u, user: {token: secret-token}}]\n"
        "contexts: [{name: t, context: {cluster: c, user: u}}]\n"
    )
    src = KubernetesSource.connect(kubeconfig=str(kc), kinds=("pods",), config=FAST)
    try:
        src.start()
        assert src.wait_synced(WAIT)
        assert set(src.objects("pods")) == {"x/a", "x/b", "y/a"}
    finally:
        src.close()
    with pytest.raises(SourceError, match="kubeconfig"):
        client_configuration(kubeconfig=str(tmp_path / "missing"))


def test_sk8_in_cluster_without_service_account_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    if os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        pytest.skip("running inside a pod")
    with pytest.raises(SourceError, match="in-cluster service account"):
        client_configuration()


# --- leaks -------------------------------------------------------------------------------
def _fds() -> tuple[int, int]:
    total = sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        total += 1
        sockets += target.startswith("socket:")
    return total, sockets


def _source_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sensilla-k8s-")]


def test_sk8_no_thread_or_socket_leak_over_1000_events(server: FakeAPIServer) -> None:
    import time

    seed(server)
    # baseline with the server up and idle
    threads0, (fds0, socks0) = threading.active_count(), _fds()
    src = KubernetesSource(server.configuration(), config=FAST).start()
    try:
        assert src.wait_synced(WAIT)
        assert len(_source_threads()) == 6
        events = 0
        i = 0
        mid: list[tuple[int, int]] = []
        while events < 1000:
            i += 1
            server.put("pods", pod("x", f"p{i}", f"10.2.{i // 250}.{i % 250 + 1}"))
            server.label("pods", f"x/p{i}", v="1")
            events += 2
            if i % 3 == 0:
                server.delete("pods", f"x/p{i}")
                events += 1
            if i % 60 == 0:
                server.drop_watches()
                assert wait_until(src, lambda: same_as_server(src, server))
                mid.append(_fds())
            if i == 200:
                server.unavailable = True
                server.drop_watches()
                server.put("pods", pod("x", "during", "10.3.0.1"))
                server.compact()  # forces relists (410)
                server.unavailable = False
        assert wait_until(src, lambda: same_as_server(src, server))
        st = src.status()["kinds"]["pods"]
        assert st["gone"] >= 1 and st["lists"] >= 2
        assert st["events"] >= 500
        # during the run, sockets stay bounded: one watch per kind plus pooled ones
        assert max(s for _, s in mid) <= socks0 + 2 * 6 + 6
        assert len(_source_threads()) == 6
    finally:
        src.close()
    assert not any(r.alive for r in src._reflectors)
    # the server notices the closed connections and its handler threads end
    end = time.monotonic() + WAIT
    while time.monotonic() < end and (
        threading.active_count() > threads0 or _fds() != (fds0, socks0)
    ):
        time.sleep(0.05)
    assert threading.active_count() == threads0, [t.name for t in threading.enumerate()]
    assert _fds() == (fds0, socks0)


# --- policy: a label change moves a pod to a new identity and recompiles -----------------
def test_sk8_label_change_new_identity_and_recompile(
    server: FakeAPIServer, make_source: Any
) -> None:
    from collector.compiler.compile import NodePlan, compile_node

    seed(server)
    server.put("networkpolicies", {
        "metadata": {"namespace": "x", "name": "b-from-a"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                              "ports": [{"port": 80, "protocol": "TCP"}]}]}})
    src = make_source(server, kinds=("nodes", "namespaces", "pods", "networkpolicies"))
    assert src.wait_synced(WAIT)

    # the collector's loop: recompile the node's plan on every change of the source
    plans: list[NodePlan] = [compile_node(src.cluster_state(), "n1")]
    done = threading.Event()

    def recompile(revision: int, kind: str, changes: list[Any]) -> None:
        plans.append(compile_node(src.cluster_state(), "n1"))
        done.set()

    src.subscribe(recompile)

    def peers_of_b(plan: NodePlan) -> set[int]:
        return {r.peer for r in plan.endpoints["x/b"].ingress.rules if r.port_lo == 80}

    first = plans[-1]
    id_a = first.identities.of_pod("x/a")
    assert first.endpoints["x/b"].ingress.enforced
    assert peers_of_b(first) == {id_a}

    server.label("pods", "x/a", pod="c")  # x/a now looks like "pod=c"
    assert wait_until(src, lambda: plans[-1].identities.of_pod("x/a") != id_a)
    moved = plans[-1]
    assert moved.revision == src.revision
    assert moved.identities.of_pod("x/a") != id_a
    assert peers_of_b(moved) == set()  # no pod is labelled pod=a any more
    # back to pod=a: the same identity number as before (derived, not allocated)
    server.label("pods", "x/a", pod="a")
    assert wait_until(src, lambda: plans[-1].identities.of_pod("x/a") == id_a)
    assert peers_of_b(plans[-1]) == {id_a}
    assert done.is_set()


def test_sk8_endpointslice_change_recompiles_clusterip_egress(
    server: FakeAPIServer, make_source: Any
) -> None:
    """x/a may reach pod=b on 80. The Service web (10.96.0.10:80) is compiled into
    x/a's egress while its only backend is x/b; a backend x/a may not reach (y/a,
    added to the EndpointSlice) takes it out again at the next revision."""
    from collector.compiler.compile import NodePlan, compile_node

    seed(server)
    server.put("networkpolicies", {
        "metadata": {"namespace": "x", "name": "a-to-b"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                             "ports": [{"port": 80, "protocol": "TCP"}]}]}})
    server.put("services", {
        "metadata": {"namespace": "x", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})

    def web_slice(*backends: tuple[str, str, str]) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "x", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": name}}
                          for ip, ns, name in backends],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }

    server.put("endpointslices", web_slice(("10.0.0.2", "x", "b")))
    src = make_source(server)  # every kind: the collector's default
    assert src.wait_synced(WAIT)

    def frontend_nets(plan: NodePlan) -> set[str]:
        egress = plan.endpoints["x/a"].egress
        groups = {c.group: str(c.network) for c in egress.cidrs if c.group}
        return {groups[r.peer] for r in egress.rules if r.peer in groups and r.port_lo == 80}

    state = src.cluster_state()
    assert [(fe.service, str(fe.address), fe.port) for fe in state.frontends.values()] == [
        ("x/web", "10.96.0.10", 80)]
    assert frontend_nets(compile_node(state, "n1")) == {"10.96.0.10/32"}

    server.put("endpointslices", web_slice(("10.0.0.2", "x", "b"), ("10.0.1.1", "y", "a")))
    assert wait_until(src, lambda: len(
        next(iter(src.cluster_state().frontends.values())).backends) == 2)
    assert frontend_nets(compile_node(src.cluster_state(), "n1")) == set()
