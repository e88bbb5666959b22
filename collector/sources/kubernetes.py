"""The Kubernetes source: the cluster's objects from an API server, by list/watch.

`sensilla collector --source kubernetes` and the relay's read-only watch (Explain)
use it. It keeps, per kind, the current objects as plain dicts (Kubernetes JSON),
and one revision counter that increases on every change of any kind, with change
notifications; the policy model builds its ClusterState from a snapshot exactly as
it does from the lab state directory.

Kinds: nodes, namespaces, pods, networkpolicies (what policy needs, as in the lab
state directory), services and endpointslices (flow enrichment; ClusterIP
resolution). One reflector thread per kind (collector.sources.k8s_watch).

    with KubernetesSource.connect() as src:     # in-cluster, else kubeconfig
        src.wait_synced(timeout=60)
        snap = src.snapshot()                   # Snapshot(revision, objects)
        state = src.cluster_state()             # collector.policy.cluster.ClusterState
        rev = src.wait(snap.revision, timeout=5)  # blocks until something changed
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collector.sources.k8s_watch import KINDS, Change, Obj, Reflector, WatchConfig

if TYPE_CHECKING:
    from collector.policy.cluster import ClusterState
    from collector.sources.k8s_services import ServiceIndex

log = logging.getLogger(__name__)

POLICY_KINDS = ("nodes", "namespaces", "pods", "networkpolicies")
SERVICE_KINDS = ("services", "endpointslices")
DEFAULT_KINDS = POLICY_KINDS + SERVICE_KINDS

Listener = Callable[[int, str, list[Change]], None]  # (revision, kind, changes)


class SourceError(Exception):
    """The source could not be configured (no kubeconfig, no in-cluster account)."""


@dataclass
class Snapshot:
    """Every object of every watched kind at one revision (read-only)."""

    revision: int
    objects: dict[str, dict[str, Obj]] = field(default_factory=dict)  # kind -> key -> obj

    def get(self, kind: str, key: str) -> Obj | None:
        return self.objects.get(kind, {}).get(key)


def client_configuration(
    kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = None
) -> Any:
    """A kubernetes.client.Configuration: the pod's service account when running in
    a cluster (or `in_cluster=True`), else the kubeconfig (`kubeconfig`, $KUBECONFIG,
    ~/.kube/config)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        else:
            config.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except config.ConfigException as exc:
        where = "in-cluster service account" if in_cluster else "kubeconfig"
        raise SourceError(f"kubernetes source: cannot load the {where}: {exc}") from exc
    except FileNotFoundError as exc:
        raise SourceError(f"kubernetes source: kubeconfig not found: {exc}") from exc
    # the reflectors retry with their own backoff; urllib3 must not retry behind them
    cfg.retries = False
    return cfg


class KubernetesSource:
    """List/watch of the cluster's objects; see the module docstring."""

    name = "kubernetes"

    def __init__(
        self,
        configuration: Any,
        kinds: Iterable[str] = DEFAULT_KINDS,
        config: WatchConfig | None = None,
    ) -> None:
        from kubernetes import client

        self.kinds = tuple(kinds)
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {sorted(KINDS)}")
        self.config = config or WatchConfig()
        self._api = client.ApiClient(configuration)
        self._cond = threading.Condition()
        self._objects: dict[str, dict[str, Obj]] = {k: {} for k in self.kinds}
        self._revision = 0
        self._synced: set[str] = set()
        self._listeners: list[Listener] = []
        self._services: ServiceIndex | None = None
        self._services_rev = -1
        self._reflectors = [
            Reflector(self._api, KINDS[k], self._apply, self.config, self._mark_synced)
            for k in self.kinds
        ]
        self._started = False
        self._closed = False

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        kinds: Iterable[str] = DEFAULT_KINDS,
        config: WatchConfig | None = None,
    ) -> KubernetesSource:
        return cls(client_configuration(kubeconfig, context, in_cluster), kinds, config)

    # --- life cycle ------------------------------------------------------------------
    def start(self) -> KubernetesSource:
        if self._closed:
            raise RuntimeError("source is closed")
        if not self._started:
            self._started = True
            for r in self._reflectors:
                r.start()
        return self

    def close(self) -> None:
        """Stop every watch, join the threads, close the connection pool."""
        if self._closed:
            return
        self._closed = True
        for r in self._reflectors:
            r._stop.set()  # all at once, then wait for each
        for r in self._reflectors:
            r.stop()
        self._api.close()
        with self._cond:
            self._cond.notify_all()

    stop = close

    def __enter__(self) -> KubernetesSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state -------------------------------------------------------------------------
    @property
    def revision(self) -> int:
        with self._cond:
            return self._revision

    @property
    def synced(self) -> bool:
        with self._cond:
            return len(self._synced) == len(self.kinds)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once every kind has been listed at least once."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._synced) == len(self.kinds) or self._closed, timeout
            ) and len(self._synced) == len(self.kinds)

    def wait(self, revision: int, timeout: float | None = None) -> int:
        """Block until the revision is past `revision` (or timeout, or close); returns
        the current revision."""
        with self._cond:
            self._cond.wait_for(lambda: self._revision > revision or self._closed, timeout)
            return self._revision

    def objects(self, kind: str) -> dict[str, Obj]:
        with self._cond:
            return dict(self._objects[kind])

    def snapshot(self) -> Snapshot:
        """A consistent view of every kind at one revision. The objects are shared,
        not copied: treat them as read-only (updates replace, never mutate, them)."""
        with self._cond:
            return Snapshot(self._revision, {k: dict(v) for k, v in self._objects.items()})

    def cluster_state(self) -> ClusterState:
        """The policy model's view (PolicyValidationError for an invalid policy),
        Service frontends included (egress to a ClusterIP is judged on its backends)."""
        from collector.policy.cluster import ClusterState
        from collector.sources.k8s_services import ServiceIndex, service_frontends

        snap = self.snapshot()
        index = ServiceIndex.from_objects(
            snap.objects.get("services", {}).values(),
            snap.objects.get("endpointslices", {}).values(),
        )
        return ClusterState.from_objects(
            nodes=snap.objects.get("nodes", {}).values(),
            namespaces=snap.objects.get("namespaces", {}).values(),
            pods=snap.objects.get("pods", {}).values(),
            policies=snap.objects.get("networkpolicies", {}).values(),
            revision=snap.revision,
            frontends=service_frontends(index),
        )

    def services(self) -> ServiceIndex:
        """The Service lookup for flow enrichment, rebuilt when Services or
        EndpointSlices changed."""
        from collector.sources.k8s_services import ServiceIndex

        with self._cond:
            if self._services is not None and self._services_rev == self._revision:
                return self._services
            rev = self._revision
            svcs = list(self._objects.get("services", {}).values())
            slices = list(self._objects.get("endpointslices", {}).values())
        index = ServiceIndex.from_objects(svcs, slices)
        with self._cond:
            self._services, self._services_rev = index, rev
        return index

    def status(self) -> dict[str, Any]:
        """Per kind: synced, resourceVersion, counters (for `sensilla status`, logs)."""
        out: dict[str, Any] = {"revision": self.revision, "kinds": {}}
        for r in self._reflectors:
            s = r.stats
            out["kinds"][r.rk.name] = {
                "synced": r.synced.is_set(),
                "resource_version": r.resource_version,
                "objects": len(self._objects[r.rk.name]),
                "lists": s.lists,
                "watches": s.watches,
                "events": s.events,
                "bookmarks": s.bookmarks,
                "gone": s.gone,
                "errors": s.errors,
                "last_error": s.last_error,
            }
        return out

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(revision, kind, changes)` after every change (from a
        reflector thread: keep it short). Returns an unsubscribe function."""
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # --- from the reflectors -------------------------------------------------------------
    def _apply(self, kind: str, changes: list[Change]) -> None:
        with self._cond:
            store = self._objects[kind]
            for event, key, obj in changes:
                if event == "DELETED":
                    store.pop(key, None)
                else:
                    store[key] = obj
            self._revision += 1
            revision = self._revision
            listeners = list(self._listeners)
            self._cond.notify_all()
        for listener in listeners:
            try:
                listener(revision, kind, changes)
            except Exception:
                log.exception("source listener failed")

    def _mark_synced(self, kind: str) -> None:
        with self._cond:
            self._synced.add(kind)
            self._cond.notify_all()
