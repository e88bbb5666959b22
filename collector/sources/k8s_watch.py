"""A list/watch reflector for one Kubernetes resource, on the official client.

One `Reflector` keeps an up-to-date copy of every object of one kind (as plain
dicts, the JSON the API server sent, minus `metadata.managedFields`):

- it lists (paginated, `limit`/`continue`), remembers the list's resourceVersion,
  then watches from there with `allowWatchBookmarks`;
- a watch that ends (the server's `timeoutSeconds`, a dropped connection, a read
  timeout) resumes from the last resourceVersion seen, bookmarks included, so no
  event is lost and nothing is listed again;
- `410 Gone` (an HTTP 410 or an `ERROR` event carrying a 410 Status: "too old
  resource version") relists; the relist replaces the store and reports the
  differences, deletions that happened while disconnected included;
- other errors back off exponentially with jitter (the sleep is interrupted by
  `stop`);
- every request carries a connect and a read timeout; every response is closed;
  `stop` shuts the open watch down from another thread, so a reflector never
  leaves a thread or a socket behind.

The reflector calls `on_change(kind, changes)` with a list of
`(event, key, object)` (event: ADDED, MODIFIED, DELETED) under no lock of its own;
the owner (collector.sources.kubernetes) serialises and counts revisions.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Change = tuple[str, str, Obj]  # (ADDED | MODIFIED | DELETED, key, object)
OnChange = Callable[[str, list[Change]], None]


@dataclass(frozen=True)
class ResourceKind:
    """One watched resource: where it lives and what its objects are called."""

    name: str  # plural, as the lab state directory names it ("pods")
    api_version: str  # "v1", "networking.k8s.io/v1"
    kind: str  # "Pod"
    namespaced: bool
    api_class: str  # kubernetes.client class with the list method
    list_method: str  # its cluster-wide list method

    def key(self, obj: Obj) -> str:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise ValueError(f"{self.kind} without metadata.name")
        if self.namespaced:
            return f"{meta.get('namespace') or 'default'}/{name}"
        return name


KINDS: dict[str, ResourceKind] = {
    k.name: k
    for k in (
        ResourceKind("nodes", "v1", "Node", False, "CoreV1Api", "list_node"),
        ResourceKind("namespaces", "v1", "Namespace", False, "CoreV1Api", "list_namespace"),
        ResourceKind(
            "pods", "v1", "Pod", True, "CoreV1Api", "list_pod_for_all_namespaces"
        ),
        ResourceKind(
            "services", "v1", "Service", True, "CoreV1Api", "list_service_for_all_namespaces"
        ),
        ResourceKind(
            "endpointslices",
            "discovery.k8s.io/v1",
            "EndpointSlice",
            True,
            "DiscoveryV1Api",
            "list_endpoint_slice_for_all_namespaces",
        ),
        ResourceKind(
            "networkpolicies",
            "networking.k8s.io/v1",
            "NetworkPolicy",
            True,
            "NetworkingV1Api",
            "list_network_policy_for_all_namespaces",
        ),
    )
}


@dataclass(frozen=True)
class WatchConfig:
    """Timings of the list/watch loop (seconds)."""

    # the server ends each watch after a random time in [min, 2*min) (client-go: 5-10 min)
    watch_timeout: float = 300.0
    # the socket read timeout past the server's timeout before the client gives up
    read_slack: float = 30.0
    connect_timeout: float = 10.0
    list_timeout: float = 60.0  # read timeout of each list page
    page_size: int = 500
    backoff_base: float = 0.8
    backoff_cap: float = 30.0

    def server_timeout(self, rng: random.Random) -> int:
        return max(1, int(self.watch_timeout * (1.0 + rng.random())))


class Backoff:
    """Exponential backoff with jitter: the n-th failure waits a random time in
    [d/2, d] with d = min(cap, base * 2**n)."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        d = min(self.cap, self.base * (2.0 ** min(self.failures, 30)))
        self.failures += 1
        return d * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.failures = 0


class Gone(Exception):
    """The resourceVersion is too old (410): the reflector must relist."""


class WatchError(Exception):
    """The server sent an ERROR event other than 410."""


@dataclass
class ReflectorStats:
    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    gone: int = 0
    errors: int = 0
    last_error: str = ""


def strip(obj: Obj, rk: ResourceKind) -> Obj:
    """The object as the source keeps it: with apiVersion and kind (list items come
    without them), without managedFields (large, and nothing here needs them)."""
    obj.setdefault("apiVersion", rk.api_version)
    obj.setdefault("kind", rk.kind)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _iter_lines(resp: Any) -> Iterator[bytes]:
    """Lines of a streamed (chunked) response, as they arrive."""
    buf = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1 :]
            if line.strip():
                yield line
    if buf.strip():
        yield buf


class Reflector:
    """List and watch one resource kind into a dict; see the module docstring."""

    def __init__(
        self,
        api_client: Any,
        rk: ResourceKind,
        on_change: OnChange,
        config: WatchConfig | None = None,
        on_synced: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes import client as k8s

        self.rk = rk
        self.config = config or WatchConfig()
        self._list = getattr(getattr(k8s, rk.api_class)(api_client), rk.list_method)
        self._on_change = on_change
        self._on_synced = on_synced
        self._rng = rng or random.Random()
        self._backoff = Backoff(self.config.backoff_base, self.config.backoff_cap, self._rng)
        self._store: dict[str, Obj] = {}
        self._rv = ""
        self._stop = threading.Event()
        self._resp_lock = threading.Lock()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.stats = ReflectorStats()

    # --- life cycle -------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("reflector already started")
        self._thread = threading.Thread(
            target=self._run, name=f"sensilla-k8s-{self.rk.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and close the open request; returns once the thread ended."""
        self._stop.set()
        self._abort_response()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("reflector %s did not stop within %.0fs", self.rk.name, timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def resource_version(self) -> str:
        return self._rv

    def _abort_response(self) -> None:
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()  # urllib3 >= 2.3: unblocks a read in another thread
            except Exception:
                pass

    def _track(self, resp: Any) -> None:
        with self._resp_lock:
            self._resp = resp
        if self._stop.is_set():
            self._abort_response()

    def _release(self, resp: Any) -> None:
        with self._resp_lock:
            if self._resp is resp:
                self._resp = None
        try:
            resp.close()
            resp.release_conn()
        except Exception:
            pass

    # --- the loop ----------------------------------------------------------------------
    def _run(self) -> None:
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                if self._watch():
                    self._backoff.reset()
                elif not self._stop.is_set():
                    # a watch that ended without a single line: do not spin on a
                    # server or proxy that closes at once
                    self._stop.wait(self._backoff.next_delay())
            except Gone:
                self.stats.gone += 1
                need_list = True
                log.info("%s: resourceVersion %s too old, relisting", self.rk.name, self._rv)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.stats.errors += 1
                self.stats.last_error = _describe(exc)
                if _status(exc) == 410:
                    self.stats.gone += 1
                    need_list = True
                    continue
                delay = self._backoff.next_delay()
                log.warning(
                    "%s: %s; retrying in %.1fs", self.rk.name, self.stats.last_error, delay
                )
                self._stop.wait(delay)

    def _relist(self) -> None:
        items: dict[str, Obj] = {}
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.config.page_size}
            if token:
                kwargs["_continue"] = token
            resp = self._list(
                _preload_content=False,
                _request_timeout=(self.config.connect_timeout, self.config.list_timeout),
                **kwargs,
            )
            self._track(resp)
            try:
                body = json.loads(resp.data)
            finally:
                self._release(resp)
            if self._stop.is_set():
                return
            for obj in body.get("items") or []:
                obj = strip(obj, self.rk)
                items[self.rk.key(obj)] = obj
            meta = body.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                break
        self.stats.lists += 1
        changes: list[Change] = []
        for key, gone in self._store.items():
            if key not in items:
                changes.append(("DELETED", key, gone))
        for key, obj in items.items():
            old = self._store.get(key)
            if old is None:
                changes.append(("ADDED", key, obj))
            elif _rv_of(old) != _rv_of(obj) or old != obj:
                changes.append(("MODIFIED", key, obj))
        self._store = items
        self._rv = rv
        self._emit(changes)
        if not self.synced.is_set():
            self.synced.set()
            if self._on_synced is not None:
                self._on_synced(self.rk.name)

    def _watch(self) -> int:
        """One watch request from the last resourceVersion; returns the number of
        lines (events and bookmarks) it carried."""
        server_timeout = self.config.server_timeout(self._rng)
        resp = self._list(
            watch=True,
            resource_version=self._rv or None,
            allow_watch_bookmarks=True,
            timeout_seconds=server_timeout,
            _preload_content=False,
            _request_timeout=(
                self.config.connect_timeout,
                server_timeout + self.config.read_slack,
            ),
        )
        self._track(resp)
        self.stats.watches += 1
        lines = 0
        try:
            for line in _iter_lines(resp):
                if self._stop.is_set():
                    break
                lines += 1
                self._handle(json.loads(line))
        finally:
            self._release(resp)
        return lines

    def _handle(self, event: Obj) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Gone(obj.get("message") or "resource version too old")
            raise WatchError(f"watch error {code}: {obj.get('message') or obj}")
        meta = obj.get("metadata") or {}
        rv = str(meta.get("resourceVersion") or "")
        if etype == "BOOKMARK":
            self.stats.bookmarks += 1
            if rv:
                self._rv = rv
            return
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            raise WatchError(f"unknown watch event type {etype!r}")
        obj = strip(obj, self.rk)
        key = self.rk.key(obj)
        self.stats.events += 1
        if rv:
            self._rv = rv
        if etype == "DELETED":
            if self._store.pop(key, None) is None:
                return  # never seen: nothing changes for the owner
            self._emit([("DELETED", key, obj)])
            return
        etype = "MODIFIED" if key in self._store else "ADDED"
        self._store[key] = obj
        self._emit([(etype, key, obj)])

    def _emit(self, changes: list[Change]) -> None:
        if changes:
            self._on_change(self.rk.name, changes)


def _rv_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _describe(exc: BaseException) -> str:
    """One line for logs: the client's ApiException prints headers and body."""
    status = _status(exc)
    if status is not None:
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}".strip()
    return f"{type(exc).__name__}: {exc}"


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) else None
