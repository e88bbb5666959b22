"""Services for flow enrichment and ClusterIP resolution, from Services and
EndpointSlices (discovery.k8s.io/v1).

`ServiceIndex.lookup(ip, port)` answers "which Service is this address?" for a
flow's source_service / destination_service:

1. a frontend: a Service's ClusterIP(s), externalIPs or load-balancer ingress IPs
   (with `port`, only a Service exposing that port matches);
2. otherwise a backend: an address listed in one of the Service's EndpointSlices
   (with `port`, only an endpoint port with that number matches). An address that
   backs several Services gets the first in namespace/name order.

`ServiceIndex.backends(cluster_ip, port, protocol)` resolves a ClusterIP and a
service port to the endpoints behind it (ready endpoints, the EndpointSlice's
port of the same name), which is what kube-proxy may DNAT that traffic to, and
`service_frontends(index)` hands every frontend with its backends to the policy
model, which judges a pod's egress to a ClusterIP on them. See docs/kubernetes.md,
"Traffic to a ClusterIP".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.policy.cluster import ServiceBackend, ServiceFrontend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, order=True)
class ServiceRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, order=True)
class Backend:
    address: IPAddress
    port: int
    protocol: str
    pod: str = ""  # "ns/name" from the endpoint's targetRef, when it names a Pod


def _ip(text: Any) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


@dataclass
class _Service:
    ref: ServiceRef
    frontends: tuple[IPAddress, ...]
    ports: tuple[ServicePort, ...]


class ServiceIndex:
    """An immutable lookup table; build a new one when Services or slices change."""

    def __init__(self, services: Iterable[_Service], slices: Iterable[tuple[ServiceRef, Any]]):
        self._services: dict[ServiceRef, _Service] = {s.ref: s for s in services}
        self._frontends: dict[IPAddress, list[ServiceRef]] = {}
        for svc in sorted(self._services.values(), key=lambda s: s.ref):
            for ip in svc.frontends:
                self._frontends.setdefault(ip, []).append(svc.ref)
        # backends: service -> [(address, port name, port, protocol, ready, pod)]
        self._endpoints: dict[ServiceRef, list[tuple[IPAddress, str, int, str, bool, str]]] = {}
        self._by_backend: dict[IPAddress, list[ServiceRef]] = {}
        for ref, sl in slices:
            rows = self._endpoints.setdefault(ref, [])
            ports = [
                (str(p.get("name") or ""), p.get("port"), str(p.get("protocol") or "TCP"))
                for p in (sl.get("ports") or [])
                if isinstance(p, Mapping)
            ]
            for ep in sl.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                # unset "ready" means ready (discovery.k8s.io/v1)
                ready = cond.get("ready") is not False
                target = ep.get("targetRef") or {}
                pod = ""
                if target.get("kind") == "Pod" and target.get("name"):
                    pod = f"{target.get('namespace') or ref.namespace}/{target['name']}"
                for text in ep.get("addresses") or []:
                    addr = _ip(text)
                    if addr is None:
                        continue
                    refs = self._by_backend.setdefault(addr, [])
                    if ref not in refs:
                        refs.append(ref)
                    for name, number, proto in ports:
                        if isinstance(number, int):
                            rows.append((addr, name, number, proto, ready, pod))
        for refs in self._by_backend.values():
            refs.sort()

    # --- building ---------------------------------------------------------------
    @classmethod
    def from_objects(
        cls,
        services: Iterable[Mapping[str, Any]] = (),
        endpointslices: Iterable[Mapping[str, Any]] = (),
    ) -> ServiceIndex:
        svcs = [s for s in (service_from_object(o) for o in services) if s is not None]
        slices: list[tuple[ServiceRef, Any]] = []
        for sl in endpointslices:
            meta = sl.get("metadata") or {}
            owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if owner:
                slices.append((ServiceRef(str(meta.get("namespace") or "default"), owner), sl))
        return cls(svcs, slices)

    # --- lookups ------------------------------------------------------------------
    def services(self) -> list[ServiceRef]:
        return sorted(self._services)

    def is_frontend(self, ip: IPAddress | str) -> bool:
        addr = _ip(ip)
        return addr is not None and addr in self._frontends

    def frontend(self, ip: IPAddress | str, port: int | None = None) -> ServiceRef | None:
        addr = _ip(ip)
        for ref in self._frontends.get(addr, []) if addr is not None else []:
            svc = self._services[ref]
            if port is None or any(p.port == port for p in svc.ports):
                return ref
        return None

    def backend_of(self, ip: IPAddress | str, port: int | None = None) -> ServiceRef | None:
        addr = _ip(ip)
        for ref in self._by_backend.get(addr, []) if addr is not None else []:
            if port is None or any(
                row[0] == addr and row[2] == port for row in self._endpoints.get(ref, [])
            ):
                return ref
        return None

    def lookup(self, ip: IPAddress | str, port: int | None = None) -> ServiceRef | None:
        """The Service an address (and port) belongs to: frontend first, then backend."""
        return self.frontend(ip, port) or self.backend_of(ip, port)

    def backends(
        self, cluster_ip: IPAddress | str, port: int, protocol: str = "TCP"
    ) -> list[Backend]:
        """Ready endpoints behind a frontend address and service port."""
        ref = self.frontend(cluster_ip, port)
        if ref is None:
            return []
        svc = self._services[ref]
        out: set[Backend] = set()
        for sp in svc.ports:
            if sp.port != port or sp.protocol != protocol:
                continue
            for addr, name, number, proto, ready, pod in self._endpoints.get(ref, []):
                if ready and name == sp.name and proto == protocol:
                    out.add(Backend(addr, number, proto, pod))
        return sorted(out, key=lambda b: (b.address.version, int(b.address), b.port, b.pod))


def service_from_object(obj: Mapping[str, Any]) -> _Service | None:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if not meta.get("name"):
        return None
    ref = ServiceRef(str(meta.get("namespace") or "default"), str(meta["name"]))
    texts: list[Any] = list(spec.get("clusterIPs") or [])
    if spec.get("clusterIP"):
        texts.append(spec["clusterIP"])
    texts += list(spec.get("externalIPs") or [])
    for ing in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        if isinstance(ing, Mapping) and ing.get("ip"):
            texts.append(ing["ip"])
    frontends = tuple(dict.fromkeys(ip for ip in (_ip(t) for t in texts) if ip is not None))
    ports = tuple(
        ServicePort(str(p.get("name") or ""), int(p["port"]), str(p.get("protocol") or "TCP"))
        for p in spec.get("ports") or []
        if isinstance(p, Mapping) and isinstance(p.get("port"), int)
    )
    return _Service(ref, frontends, ports)


@dataclass(frozen=True, order=True)
class Frontend:
    """A Service frontend address and port: what a pod's packets carry as their
    destination before kube-proxy translates it."""

    service: ServiceRef
    address: IPAddress
    port: int
    protocol: str


def frontends(index: ServiceIndex) -> list[Frontend]:
    out = []
    for ref in index.services():
        svc = index._services[ref]
        for ip in svc.frontends:
            for sp in svc.ports:
                out.append(Frontend(ref, ip, sp.port, sp.protocol))
    return sorted(out, key=lambda f: (f.service, f.address.version, int(f.address), f.port))


def service_frontends(index: ServiceIndex) -> list[ServiceFrontend]:
    """Every frontend with the ready backends behind it, for the policy model: egress
    to a ClusterIP is judged on them (collector.policy.verdict.frontend_egress). At the
    pod's veth a connection to a ClusterIP still carries the ClusterIP (the node's
    kube-proxy translates it afterwards), so egress policy cannot see which backend
    it will reach."""
    out = []
    for fe in frontends(index):
        backends = tuple(
            ServiceBackend(b.address, b.port, b.protocol)
            for b in index.backends(fe.address, fe.port, fe.protocol)
        )
        out.append(ServiceFrontend(str(fe.service), fe.address, fe.port, fe.protocol, backends))
    return out
