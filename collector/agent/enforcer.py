"""The enforcing half of the node agent.

Watch the source (lab state directory or Kubernetes), and whenever its revision moves
(policies, pods, namespace or pod labels): compile the node's plan and program the
datapath, then publish the revision now enforced. Never fail open: when reading,
validating, compiling or programming fails, the previous enforced state stays in the
maps, the published revision does not advance, and the error is reported; the next
change or a retry timer tries again.

Programming order (no window where traffic is allowed by neither the old nor the new
state):
1. the ipcache; when an identity number changes meaning between two plans (only
   possible through a hash collision), its addresses are first left out (they read
   as world, which no selector rule matches) until the policies are updated;
2. per endpoint whose plan changed: its ingress and egress policies (each swap is
   atomic in the datapath), then its endpoint entry, then the TC attachment;
3. endpoints that left the node are removed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from collector.agent.datapath_api import DatapathAPI
from collector.agent.status import StatusPublisher
from collector.compiler.compile import (
    Attribution,
    AttributionRegistry,
    EndpointPlan,
    NodePlan,
    compile_node,
)
from collector.discovery import DiscoveryError, EndpointDiscovery
from collector.identity import LabelSet
from collector.policy.cluster import ClusterState, Pod
from datapath.types import Direction, EndpointInfo, EndpointPolicy, IPNetwork

log = logging.getLogger(__name__)

# (endpoint plan, pod) -> the pod's host-side ifindex in the node's namespace, or None
# while it is not there (yet).
IfindexResolver = Callable[[EndpointPlan, Pod], int | None]


class Source(Protocol):
    @property
    def revision(self) -> int: ...

    def wait(self, revision: int, timeout: float | None = None) -> int: ...

    def cluster_state(self) -> ClusterState: ...


def ifindex_by_name(plan: EndpointPlan, pod: Pod) -> int | None:
    """The host-side interface named in the pod's annotation (the lab sets
    sensilla.io/host-interface), in this process's network namespace."""
    del pod
    if not plan.interface:
        return None
    try:
        return socket.if_nametoindex(plan.interface)
    except OSError:
        return None


class DiscoveryResolver:
    """Find each pod's host-side veth from its addresses, as on a real node
    (collector.discovery): works for the lab and for CNI-managed nodes alike."""

    def __init__(self, discovery: EndpointDiscovery) -> None:
        self.discovery = discovery
        self.reasons: dict[str, str] = {}  # pod -> why it has no interface

    def __call__(self, plan: EndpointPlan, pod: Pod) -> int | None:
        try:
            ifindex = self.discovery.resolve(pod).ifindex
        except DiscoveryError as exc:
            self.reasons[pod.key] = str(exc)
            return None
        self.reasons.pop(pod.key, None)
        return ifindex


@dataclass(frozen=True)
class Installed:
    info: EndpointInfo
    ingress: EndpointPolicy
    egress: EndpointPolicy


@dataclass
class SyncResult:
    ok: bool
    revision: int
    error: str | None = None
    seconds: float = 0.0
    changed_endpoints: int = 0


class Enforcer:
    def __init__(
        self,
        node: str,
        source: Source,
        datapath: DatapathAPI,
        status: StatusPublisher | None = None,
        resolve_ifindex: IfindexResolver = ifindex_by_name,
        retry_interval: float = 1.0,
    ) -> None:
        self.node = node
        self.source = source
        self.datapath = datapath
        self.status = status or StatusPublisher(node)
        self.resolve_ifindex = resolve_ifindex
        self.retry_interval = retry_interval
        self.registry = AttributionRegistry()
        self.plan: NodePlan | None = None  # the last plan fully programmed
        self.enforced_revision = -1
        self.pending: set[str] = set()  # endpoints whose interface is not there yet
        self.last_error: str | None = None
        self._loaded = False
        self._reconciled = False
        self._ipcache: dict[IPNetwork, int] | None = None
        self._meanings: dict[int, LabelSet] = {}
        self._endpoints: dict[str, Installed] = {}
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- queries (the observing half resolves attribution ids here) -----------------
    def attribution(self, attribution_id: int) -> Attribution | None:
        return self.registry.lookup(attribution_id)

    def endpoint_by_ifindex(self, ifindex: int) -> str | None:
        for key, inst in self._endpoints.items():
            if inst.info.ifindex == ifindex:
                return key
        return None

    # --- one round -------------------------------------------------------------------
    def sync(self) -> SyncResult:
        with self._lock:
            return self._sync()

    def _sync(self) -> SyncResult:
        t0 = time.monotonic()
        try:
            state = self.source.cluster_state()
        except Exception as exc:  # invalid object in the source, unreadable files
            return self._fail(-1, f"reading the cluster state: {exc}", t0)
        try:
            plan = compile_node(state, self.node, self.registry, self._ids)
        except Exception as exc:
            log.exception("compile failed")
            return self._fail(state.revision, f"compiling revision {state.revision}: {exc}", t0)
        try:
            changed = self._program(plan, state)
        except Exception as exc:
            log.exception("programming the datapath failed")
            return self._fail(state.revision, f"programming revision {state.revision}: {exc}", t0)
        self.plan = plan
        self._ids = {k: e.endpoint_id for k, e in plan.endpoints.items()}
        self.enforced_revision = plan.revision
        self.last_error = None
        seconds = time.monotonic() - t0
        self.status.update(
            revision=plan.revision,
            error=None,
            endpoints=len(self._endpoints),
            pending=sorted(self.pending),
            identities=len(plan.identities.by_labels),
            sync_seconds=round(seconds, 6),
        )
        return SyncResult(True, plan.revision, None, seconds, changed)

    def _fail(self, revision: int, error: str, t0: float) -> SyncResult:
        log.error("%s (still enforcing revision %s)", error, self.enforced_revision)
        self.last_error = error
        self.status.update(error=error, failed_revision=revision)
        return SyncResult(False, revision, error, time.monotonic() - t0)

    def _program(self, plan: NodePlan, state: ClusterState) -> int:
        dp = self.datapath
        if not self._loaded:
            dp.ensure_loaded()
            self._loaded = True
        meanings = {n: ls for ls, n in plan.identities.by_labels.items()}
        remeant = {
            n for n, ls in meanings.items() if n in self._meanings and self._meanings[n] != ls
        }
        ipcache = dict(plan.ipcache)
        if remeant:
            safe = {k: v for k, v in ipcache.items() if v not in remeant}
            dp.sync_ipcache(safe)
            self._ipcache = safe
        elif ipcache != self._ipcache:
            dp.sync_ipcache(ipcache)
            self._ipcache = ipcache
        changed = 0
        pending: set[str] = set()
        for key, ep in plan.endpoints.items():
            ifindex = self.resolve_ifindex(ep, state.pods[key])
            if ifindex is None:
                pending.add(key)
                continue
            info = EndpointInfo(ifindex, ep.endpoint_id, ep.identity)
            prev = self._endpoints.get(key)
            same_id = prev is not None and prev.info.endpoint_id == ep.endpoint_id
            if prev is not None and prev.info.ifindex != ifindex:
                # The pod's interface was recreated: start over for this endpoint.
                dp.remove_endpoint(prev.info.ifindex)
                del self._endpoints[key]
                prev, same_id = None, False
            if prev is not None and same_id and prev == Installed(info, ep.ingress, ep.egress):
                continue
            changed += 1
            if not same_id or prev is None or prev.ingress != ep.ingress:
                dp.install_policy(ep.endpoint_id, Direction.INGRESS, ep.ingress)
            if not same_id or prev is None or prev.egress != ep.egress:
                dp.install_policy(ep.endpoint_id, Direction.EGRESS, ep.egress)
            if prev is None or prev.info != info:
                dp.set_endpoint(info)
            if prev is None:
                dp.attach(ifindex)
            self._endpoints[key] = Installed(info, ep.ingress, ep.egress)
        for key in sorted(set(self._endpoints) - (set(plan.endpoints) - pending)):
            dp.remove_endpoint(self._endpoints[key].info.ifindex)
            del self._endpoints[key]
            changed += 1
        if not self._reconciled:
            # After a restart on reused pins: endpoints a previous agent installed for
            # pods that are gone since.
            listed = getattr(dp, "endpoints", None)
            if listed is not None:
                ours = {e.info.ifindex for e in self._endpoints.values()}
                for ifindex in sorted(set(listed()) - ours):
                    dp.remove_endpoint(ifindex)
                    changed += 1
            self._reconciled = True
        if remeant:
            dp.sync_ipcache(ipcache)
            self._ipcache = ipcache
        self._meanings = meanings
        self.pending = pending
        return changed

    # --- the loop --------------------------------------------------------------------
    def run(self, stop: threading.Event, poll: float = 0.2) -> None:
        """Until `stop`: sync when the source's revision moves, or to retry after a
        failure or while some endpoint's interface is missing."""
        attempted = -2
        last_attempt = 0.0
        while not stop.is_set():
            rev = self.source.revision
            retry = (self.last_error is not None or self.pending) and (
                time.monotonic() - last_attempt >= self.retry_interval
            )
            if rev != attempted or retry:
                attempted = rev
                last_attempt = time.monotonic()
                result = self.sync()
                if result.ok:
                    log.info(
                        "enforcing revision %d (%d endpoints changed, %.1f ms)",
                        result.revision,
                        result.changed_endpoints,
                        result.seconds * 1000,
                    )
            self.source.wait(attempted, timeout=poll)

    def describe(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "revision": self.enforced_revision,
            "endpoints": {k: vars(v.info) for k, v in sorted(self._endpoints.items())},
            "pending": sorted(self.pending),
            "error": self.last_error,
        }
