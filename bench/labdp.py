"""A lab for the datapath benchmarks: two nodes, a client pod on the first and a
server pod on the second, no Sensilla processes; the benchmark drives each node's
datapath itself, so it can switch between no program, the baseline program
(bench/progs/count.c) and Sensilla's programs with any policy, in one lab.

    with bench_lab(workdir) as bl:
        bl.use("none" | "baseline" | "sensilla")
        bl.install_allow(entries=1 | 10_000, ports=(5201,))
        bl.stats() -> {"sensilla": (run_cnt, run_time_ns), "baseline": (...)}
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyroute2 import NetNS

from bench.core import PREFIX
from datapath import Datapath, bpfsys, tc
from datapath.types import (
    Direction,
    EndpointInfo,
    EndpointPolicy,
    PolicyRule,
    Protocol,
    ReservedIdentity,
)
from sensilla.lab import Options, temporary_lab

PROGS_DIR = Path(__file__).resolve().parent / "progs"
BASELINE_NODE = f"{PREFIX}-baseline"  # TC filter names: sensilla:sbe-baseline:<prog>:<id>

CLIENT = "bench/client"
SERVER = "bench/server"
CLIENT_IDENTITY = 300
SERVER_IDENTITY = 301
FILLER_IDENTITY = 20_000  # identities of the extra policy entries: 20000, 20001, ...
FILLER_NET = ipaddress.IPv4Network("10.96.0.0/12")  # their addresses (unused by the lab)


def spec(extra_client_pods: int = 0) -> dict[str, Any]:
    pods: list[dict[str, Any]] = [
        {"namespace": "bench", "name": "client", "node": "worker", "labels": {"app": "client"}},
        {"namespace": "bench", "name": "server", "node": "worker2", "labels": {"app": "server"}},
    ]
    for i in range(extra_client_pods):
        pods.append(
            {"namespace": "bench", "name": f"c{i}", "node": "worker", "labels": {"app": "c"}}
        )
    for p in pods:
        p["ports"] = [{"name": "http", "port": 80, "protocol": "TCP"}]
    return {"nodes": ["worker", "worker2"], "namespaces": [{"name": "bench"}], "pods": pods}


def write_spec(path: Path, data: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


class Baseline:
    """The parse-and-count program, compiled with bcc (kept loaded while open)."""

    def __init__(self) -> None:
        from bcc import BPF

        self.bpf = BPF(text=(PROGS_DIR / "count.c").read_bytes())
        self.progs: dict[str, tuple[int, int]] = {}
        for tc_name, fn in (("from_pod", "count_ingress"), ("to_pod", "count_egress")):
            f = self.bpf.load_func(fn.encode(), BPF.SCHED_CLS)
            info = bpfsys.prog_info(f.fd)
            self.progs[tc_name] = (int(f.fd), int(info.id))

    def stats(self) -> tuple[int, int]:
        cnt = ns = 0
        for fd, _ in self.progs.values():
            info = bpfsys.prog_info(fd)
            cnt += int(info.run_cnt)
            ns += int(info.run_time_ns)
        return cnt, ns

    def close(self) -> None:
        self.bpf.cleanup()


@dataclass
class BenchLab:
    lab: Any
    layout: Any
    dps: dict[str, Datapath] = field(default_factory=dict)  # node name -> datapath
    ifindex: dict[str, int] = field(default_factory=dict)  # pod key -> lxc ifindex
    identity: dict[str, int] = field(default_factory=dict)
    endpoint_id: dict[str, int] = field(default_factory=dict)
    baseline: Baseline | None = None
    current: str = "none"
    attached_pods: tuple[str, ...] = (CLIENT, SERVER)

    def pod(self, key: str) -> Any:
        return self.layout.pod(key)

    def dp_of(self, key: str) -> Datapath:
        return self.dps[self.pod(key).node.name]

    # --- set-up ---------------------------------------------------------------------
    def setup(self) -> None:
        for i, p in enumerate(self.layout.pods):
            self.identity[p.key] = {CLIENT: CLIENT_IDENTITY, SERVER: SERVER_IDENTITY}.get(
                p.key, 400 + i
            )
            self.endpoint_id[p.key] = 1 + i
            with NetNS(p.node.netns, flags=0) as ipr:
                self.ifindex[p.key] = int(ipr.link_lookup(ifname=p.host_if)[0])
        for node in self.layout.nodes:
            dp = Datapath.open(node.name, netns=node.netns)
            self.dps[node.name] = dp
            dp.ensure_loaded()
            dp.sync_ipcache(self.ipcache(node, 0))
        for p in self.layout.pods:
            dp = self.dp_of(p.key)
            for d in Direction:
                dp.install_policy(self.endpoint_id[p.key], d, EndpointPolicy(enforced=False))
            dp.set_endpoint(
                EndpointInfo(self.ifindex[p.key], self.endpoint_id[p.key], self.identity[p.key])
            )
        self.baseline = Baseline()

    def ipcache(self, node: Any, fillers: int) -> dict[str, int]:
        m: dict[str, int] = {}
        for n in self.layout.nodes:
            ident = ReservedIdentity.HOST if n is node else ReservedIdentity.REMOTE_NODE
            for a in n.addresses:
                m[str(ipaddress.ip_network(a))] = int(ident)
        for p in self.layout.pods:
            m[f"{p.ipv4}/32"] = self.identity[p.key]
            m[f"{p.ipv6}/128"] = self.identity[p.key]
        base = int(FILLER_NET.network_address)
        for i in range(fillers):
            m[f"{ipaddress.IPv4Address(base + 1 + i)}/32"] = FILLER_IDENTITY + i
        return m

    # --- what runs on the pods' interfaces ---------------------------------------------
    def use(self, what: str, pods: Sequence[str] | None = None) -> None:
        """ "none", "baseline" or "sensilla" on both hooks of the pods' lxc devices."""
        pods = tuple(pods) if pods is not None else self.attached_pods
        for key in self.layout_keys():
            p = self.pod(key)
            ifi = self.ifindex[key]
            dp = self.dp_of(key)
            want = what if key in pods else "none"
            with tc.netlink(p.node.netns) as ipr:
                if want != "baseline":
                    tc.detach(ipr, ifi, BASELINE_NODE)
                if want != "sensilla":
                    dp.detach(ifi)
                if want == "baseline":
                    assert self.baseline is not None
                    tc.attach(ipr, ifi, BASELINE_NODE, self.baseline.progs)
                elif want == "sensilla":
                    dp.attach(ifi)
        self.current = what
        self.attached_pods = pods

    def layout_keys(self) -> list[str]:
        return [p.key for p in self.layout.pods]

    def install_allow(
        self, entries: int, ports: Sequence[int], protocol: int = Protocol.TCP
    ) -> int:
        """Client egress to the server and server ingress from the client allowed on
        `ports`, among `entries` policy entries per direction (the others allow
        filler identities, which also get ipcache entries). Returns the number of
        policy trie entries installed for the server's ingress."""
        fillers = max(0, entries - 1)
        for node in self.layout.nodes:
            self.dps[node.name].sync_ipcache(self.ipcache(node, fillers))

        def rules(peer: int) -> tuple[PolicyRule, ...]:
            out = []
            for i in range(fillers):
                for port in ports:
                    out.append(PolicyRule(FILLER_IDENTITY + i, protocol, port, port, 1000 + i))
            for port in ports:
                out.append(PolicyRule(peer, protocol, port, port, 1))
            return tuple(out)

        self.dp_of(CLIENT).install_policy(
            self.endpoint_id[CLIENT],
            Direction.EGRESS,
            EndpointPolicy(enforced=True, rules=rules(SERVER_IDENTITY)),
        )
        self.dp_of(SERVER).install_policy(
            self.endpoint_id[SERVER],
            Direction.INGRESS,
            EndpointPolicy(enforced=True, rules=rules(CLIENT_IDENTITY)),
        )
        got = self.dp_of(SERVER).policy_entries(self.endpoint_id[SERVER], Direction.INGRESS)
        return len(got or [])

    def clear_policy(self) -> None:
        for key in (CLIENT, SERVER):
            for d in Direction:
                self.dp_of(key).install_policy(
                    self.endpoint_id[key], d, EndpointPolicy(enforced=False)
                )
        for node in self.layout.nodes:
            self.dps[node.name].sync_ipcache(self.ipcache(node, 0))

    # --- statistics ---------------------------------------------------------------
    def sensilla_stats(self) -> tuple[int, int]:
        cnt = ns = 0
        for dp in self.dps.values():
            for st in dp.prog_stats().values():
                cnt += st.run_cnt
                ns += st.run_time_ns
        return cnt, ns

    def stats(self) -> tuple[int, int]:
        """(run count, run time ns) of what is attached now (zeros for none)."""
        if self.current == "sensilla":
            return self.sensilla_stats()
        if self.current == "baseline" and self.baseline is not None:
            return self.baseline.stats()
        return 0, 0

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.use("none", ())
        for dp in self.dps.values():
            with contextlib.suppress(Exception):
                dp.unload()
            with contextlib.suppress(Exception):
                dp.close()
        if self.baseline is not None:
            with contextlib.suppress(Exception):
                self.baseline.close()


@contextlib.contextmanager
def bench_lab(workdir: Path, extra_client_pods: int = 0) -> Iterator[BenchLab]:
    spec_path = write_spec(workdir / "lab-spec.yaml", spec(extra_client_pods))
    with temporary_lab(PREFIX, spec_path, Options(relay=False, collectors=False)) as lab:
        bl = BenchLab(lab, lab.layout())
        try:
            bl.setup()
            yield bl
        finally:
            bl.teardown()
