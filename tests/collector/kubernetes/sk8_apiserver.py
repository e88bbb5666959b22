"""A local server speaking the Kubernetes API's list and watch JSON, for tests.

It keeps objects of the six kinds the Kubernetes source watches, with one
resourceVersion counter shared by all kinds (as etcd's revision), and an event
history per kind. It serves:

- list: `GET <collection>` with `limit`/`continue` pagination; the list's
  `metadata.resourceVersion`; items without apiVersion/kind (as the API server);
- watch: `?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=T`
  as a chunked stream of `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR,
  "object": …}` lines: events after N from the history, then live ones, until T;
- `410 Gone`: a watch from a resourceVersion older than the compaction point gets
  an ERROR event with a 410 Status ("too old resource version") and the stream
  ends (the API server's behaviour), or an HTTP 410 (`gone_as_http=True`); a list
  `continue` token from before the compaction gets HTTP 410;

and faults on demand: `drop_watches()` cuts every open watch connection,
`compact()` forgets history, `fail_next(n, status)` answers the next n requests
with an error, `unavailable = True` answers every request with 503 until reset,
`delay` slows every response, `bookmark()` sends a BOOKMARK on every open watch.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Obj = dict[str, Any]

COLLECTIONS = {
    "/api/v1/nodes": ("nodes", "v1", "Node", False),
    "/api/v1/namespaces": ("namespaces", "v1", "Namespace", False),
    "/api/v1/pods": ("pods", "v1", "Pod", True),
    "/api/v1/services": ("services", "v1", "Service", True),
    "/apis/discovery.k8s.io/v1/endpointslices": (
        "endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSlice",
        True,
    ),
    "/apis/networking.k8s.io/v1/networkpolicies": (
        "networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
        True,
    ),
}
BY_KIND = {v[0]: (path, *v[1:]) for path, v in COLLECTIONS.items()}


def status_obj(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeAPIServer:
    def __init__(self, gone_as_http: bool = False) -> None:
        self.cond = threading.Condition()
        self.rv = 100
        self.objects: dict[str, dict[str, Obj]] = {k: {} for k in BY_KIND}
        self.history: dict[str, list[tuple[int, str, Obj]]] = {k: [] for k in BY_KIND}
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.gone_as_http = gone_as_http
        self.delay = 0.0
        self.fail: list[int] = []
        self.unavailable = False  # while True, every request gets 503
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.watch_generation = 0  # drop_watches() bumps it: streams of older ones end
        self.bookmark_generation = 0
        self.open_watches = 0
        self._conns: set[socket.socket] = set()
        self._paged: dict[tuple[str, int], list[Obj]] = {}  # list snapshots for continue
        self._closing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-apiserver")

    # --- life cycle -----------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAPIServer:
        self.thread.start()
        return self

    def close(self) -> None:
        with self.cond:
            self._closing = True
            self.cond.notify_all()
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    def configuration(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.retries = False
        return cfg

    # --- objects (the test's side) -----------------------------------------------------
    def _key(self, kind: str, obj: Obj) -> str:
        meta = obj["metadata"]
        return f"{meta.get('namespace', 'default')}/{meta['name']}" if BY_KIND[kind][3] else meta[
            "name"
        ]

    def put(self, kind: str, obj: Obj) -> int:
        """Create or replace; returns the new resourceVersion."""
        with self.cond:
            obj = copy.deepcopy(obj)
            _, api_version, k8s_kind, _ = BY_KIND[kind]
            obj["apiVersion"], obj["kind"] = api_version, k8s_kind
            key = self._key(kind, obj)
            old = self.objects[kind].get(key)
            self.rv += 1
            meta = obj["metadata"]
            meta["resourceVersion"] = str(self.rv)
            meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            meta["managedFields"] = [{"manager": "test", "operation": "Update"}]
            self.objects[kind][key] = obj
            self.history[kind].append((self.rv, "MODIFIED" if old else "ADDED", obj))
            self.cond.notify_all()
            return self.rv

    def delete(self, kind: str, key: str) -> int:
        with self.cond:
            obj = copy.deepcopy(self.objects[kind].pop(key))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.history[kind].append((self.rv, "DELETED", obj))
            self.cond.notify_all()
            return self.rv

    def label(self, kind: str, key: str, **labels: str) -> int:
        with self.cond:
            obj = copy.deepcopy(self.objects[kind][key])
        obj["metadata"].setdefault("labels", {}).update(labels)
        return self.put(kind, obj)

    # --- faults ------------------------------------------------------------------------
    def compact(self) -> None:
        """Forget all history: every watch from an older resourceVersion gets 410."""
        with self.cond:
            self.compacted = self.rv + 1
            for h in self.history.values():
                h.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection abruptly (no final chunk)."""
        with self.cond:
            self.watch_generation += 1
            conns = list(self._conns)
            self.cond.notify_all()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def bookmark(self) -> None:
        with self.cond:
            self.bookmark_generation += 1
            self.cond.notify_all()

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.cond:
            self.fail.extend([status] * n)

    def wait_watches(self, n: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.open_watches >= n, timeout)

    # --- serving -------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self.cond:
            self.requests.append((url.path, q))
            failure = self.fail.pop(0) if self.fail else None
            if failure is None and self.unavailable:
                failure = 503
        if self.delay:
            time.sleep(self.delay)
        if url.path not in COLLECTIONS:
            return self._send_json(h, 404, status_obj(404, "NotFound", f"no {url.path}"))
        if failure is not None:
            return self._send_json(h, failure, status_obj(failure, "InternalError", "injected"))
        kind = COLLECTIONS[url.path][0]
        if q.get("watch") in ("true", "1"):
            return self._watch(h, kind, q)
        return self._list(h, kind, q)

    def _send_json(self, h: BaseHTTPRequestHandler, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _list(self, h: BaseHTTPRequestHandler, kind: str, q: dict[str, str]) -> None:
        _, api_version, k8s_kind, _ = BY_KIND[kind]
        limit = int(q.get("limit") or 0)
        if q.get("continue"):
            token = json.loads(base64.b64decode(q["continue"]))
            rv, offset, items = token["rv"], token["offset"], None
            with self.cond:
                if rv < self.compacted:
                    expired = status_obj(410, "Expired", "continue parameter too old")
                    return self._send_json(h, 410, expired)
                items = self._paged.get((kind, rv))
            if items is None:
                return self._send_json(h, 410, status_obj(410, "Expired", "continue expired"))
        else:
            with self.cond:
                rv, offset = self.rv, 0
                items = []
                for _, obj in sorted(self.objects[kind].items()):
                    item = copy.deepcopy(obj)
                    item.pop("apiVersion", None)
                    item.pop("kind", None)
                    items.append(item)
                self._paged[(kind, rv)] = items
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and offset + limit < len(items):
            meta["continue"] = base64.b64encode(
                json.dumps({"rv": rv, "offset": offset + limit}).encode()
            ).decode()
        self._send_json(
            h, 200, {"kind": f"{k8s_kind}List", "apiVersion": api_version, "metadata": meta,
                     "items": page},
        )

    def _watch(self, h: BaseHTTPRequestHandler, kind: str, q: dict[str, str]) -> None:
        start_rv = int(q.get("resourceVersion") or 0)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        with self.cond:
            gone = start_rv and start_rv < self.compacted - 1
            if not start_rv:
                start_rv = self.rv
            generation = self.watch_generation
            bgen = self.bookmark_generation
        if gone and self.gone_as_http:
            return self._send_json(
                h, 410, status_obj(410, "Expired", f"too old resource version: {start_rv}")
            )
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        conn = h.connection
        with self.cond:
            self._conns.add(conn)
            self.open_watches += 1
            self.cond.notify_all()
        try:
            if gone:
                self._chunk(h, {"type": "ERROR", "object": status_obj(
                    410, "Expired", f"too old resource version: {start_rv} ({self.compacted})")})
                self._end(h)
                return
            sent = start_rv
            while True:
                with self.cond:
                    self.cond.wait_for(
                        lambda b=bgen, s=sent: self._closing  # type: ignore[misc]
                        or self.watch_generation != generation
                        or self.bookmark_generation != b
                        or (self.history[kind] and self.history[kind][-1][0] > s)
                        or time.monotonic() >= deadline,
                        timeout=0.2,
                    )
                    if self._closing or self.watch_generation != generation:
                        return  # dropped: no final chunk
                    events = [
                        (rv, t, copy.deepcopy(o)) for rv, t, o in self.history[kind] if rv > sent
                    ]
                    send_bookmark = bookmarks and self.bookmark_generation != bgen
                    bgen = self.bookmark_generation
                    current = self.rv
                for rv, etype, obj in events:
                    self._chunk(h, {"type": etype, "object": obj})
                    sent = rv
                if send_bookmark:
                    _, api_version, k8s_kind, _ = BY_KIND[kind]
                    self._chunk(h, {"type": "BOOKMARK", "object": {
                        "kind": k8s_kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(current)}}})
                    sent = max(sent, current)
                if not events and not send_bookmark and self._client_gone(conn):
                    return
                if time.monotonic() >= deadline:
                    self._end(h)
                    return
        except OSError:
            return
        finally:
            with self.cond:
                self._conns.discard(conn)
                self.open_watches -= 1
            h.close_connection = True

    @staticmethod
    def _client_gone(conn: socket.socket) -> bool:
        import select

        try:
            r, _, _ = select.select([conn], [], [], 0)
            if r:
                return conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    @staticmethod
    def _chunk(h: BaseHTTPRequestHandler, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    @staticmethod
    def _end(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
