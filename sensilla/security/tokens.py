"""Bearer tokens: the server's token file and the per-call check.

The token file (YAML or JSON) holds digests, never tokens:

    tokens:
      - name: team-x                # shown in logs (never the token)
        sha256: 5e8848…             # hex SHA-256 of the token's UTF-8 bytes
        namespaces: [x, y]          # sees flows from or to x or y, nothing else
      - name: ops
        sha256: …
        admin: true                 # sees everything
      - name: collectors
        sha256: …
        ingest: true                # may push flows (sensilla.ingest.v1); reads nothing

An entry needs ``admin: true``, a non-empty ``namespaces`` list or ``ingest: true``
(``ingest`` may be combined with ``namespaces``). Names and digests are unique.
``sensilla token create`` writes entries and prints the token once.

Clients send ``authorization: Bearer <token>``. The server hashes what it gets and
compares the digest with every entry in constant time (hmac.compare_digest, no early
exit). The file is re-read when it changes (checked at most once a second), so
tokens can be added or revoked without a restart; a file that no longer parses
keeps the previous tokens in force (with a warning).

:class:`AuthInterceptor` (grpc.aio) checks every call: gRPC health is open (probes);
sensilla.ingest.v1 needs an ``ingest`` or ``admin`` token; everything else (Hubble's
Observer, sensilla.query.v1) a reading token (``admin`` or ``namespaces``). It sets
the caller's scope (sensilla.security.scope.current_scope) for the servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sensilla.security.scope import Scope, reset_scope, set_scope

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
INGEST_PREFIX = "/sensilla.ingest.v1.Ingest/"
REFLECTION_PREFIX = "/grpc.reflection."
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
RELOAD_CHECK_S = 1.0
LOCAL = Scope("local socket", admin=True)


class TokenFileError(ValueError):
    """The token file is invalid; the message names the entry and field."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes  # 32 bytes
    scope: Scope


def parse_tokens(raw: Any, source: str = "token file") -> list[TokenEntry]:
    if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
        raise TokenFileError(f"{source}: a mapping with a list 'tokens'")
    unknown = sorted(set(raw) - {"tokens"})
    if unknown:
        raise TokenFileError(f"{source}: unknown field(s) {', '.join(unknown)}")
    out: list[TokenEntry] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for i, item in enumerate(raw["tokens"]):
        where = f"{source}: tokens[{i}]"
        if not isinstance(item, dict):
            raise TokenFileError(f"{where}: must be a mapping")
        extra = sorted(set(item) - {"name", "sha256", "namespaces", "admin", "ingest"})
        if extra:
            raise TokenFileError(f"{where}: unknown field(s) {', '.join(extra)}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise TokenFileError(f"{where}.name: 1..128 letters, digits, '_.:@-'")
        where = f"{where} ({name})"
        if name in names:
            raise TokenFileError(f"{where}.name: used twice")
        digest = item.get("sha256")
        if not isinstance(digest, str) or not HEX64.match(digest.lower()):
            raise TokenFileError(f"{where}.sha256: 64 hex digits (the token's SHA-256)")
        d = bytes.fromhex(digest)
        if d in digests:
            raise TokenFileError(f"{where}.sha256: the same token as another entry")
        admin = item.get("admin", False)
        ingest = item.get("ingest", False)
        for key, value in (("admin", admin), ("ingest", ingest)):
            if not isinstance(value, bool):
                raise TokenFileError(f"{where}.{key}: true or false")
        namespaces = item.get("namespaces", [])
        if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
            raise TokenFileError(f"{where}.namespaces: a list of namespace names")
        for n in namespaces:
            if not NAMESPACE_RE.match(n):
                raise TokenFileError(f"{where}.namespaces: {n!r} is not a namespace name")
        if "namespaces" in item and not namespaces:
            raise TokenFileError(
                f"{where}.namespaces: empty (say admin: true for every namespace)"
            )
        if admin and namespaces:
            raise TokenFileError(f"{where}: admin and namespaces exclude each other")
        if not (admin or namespaces or ingest):
            raise TokenFileError(f"{where}: needs admin: true, namespaces or ingest: true")
        names.add(name)
        digests.add(d)
        out.append(
            TokenEntry(d, Scope(name, admin=admin, namespaces=frozenset(namespaces), ingest=ingest))
        )
    return out


def load_token_file(path: str) -> list[TokenEntry]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenFileError(f"{path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise TokenFileError(f"{path}: not valid YAML/JSON") from None  # no content echoed
    return parse_tokens(raw, path)


class TokenStore:
    """The tokens of a file, re-read when it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries = load_token_file(path)  # raises TokenFileError: refuse to start
        self._sig = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reloads = 0

    @classmethod
    def from_entries(cls, entries: list[TokenEntry]) -> TokenStore:
        store = cls.__new__(cls)
        store.path = ""
        store.entries = list(entries)
        store._sig = None
        store._checked = time.monotonic()
        store._lock = threading.Lock()
        store.reloads = 0
        return store

    def _stat(self) -> Any:
        try:
            st = os.stat(self.path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        if not self.path:
            return
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_S:
            return
        with self._lock:
            self._checked = now
            sig = self._stat()
            if sig == self._sig:
                return
            try:
                entries = load_token_file(self.path)
            except TokenFileError as exc:
                log.warning("token file changed but is invalid (old tokens stay): %s", exc)
                self._sig = sig
                return
            self.entries, self._sig = entries, sig
            self.reloads += 1
            log.info("token file %s re-read: %d tokens", self.path, len(entries))

    def lookup(self, token: str) -> Scope | None:
        """The scope of a token, None if unknown (constant time over the entries)."""
        self._maybe_reload()
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: Scope | None = None
        for e in self.entries:
            if hmac.compare_digest(digest, e.digest) and found is None:
                found = e.scope
        return found


def bearer(metadata: Any) -> str | None:
    """The bearer token of a call's metadata (None: no authorization header)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            scheme, _, token = str(value).strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return ""
            return token.strip()
    return None


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def authorize(store: TokenStore, method: str, metadata: Any) -> Scope | None:
    """The caller's scope for ``method``; None for open methods (health). Raises
    AuthError (UNAUTHENTICATED / PERMISSION_DENIED) with a message that never holds
    the token."""
    if method.startswith(HEALTH_PREFIX):
        return None
    token = bearer(metadata)
    if token is None:
        raise AuthError(
            grpc.StatusCode.UNAUTHENTICATED,
            "this server requires a bearer token (authorization: Bearer …)",
        )
    scope = store.lookup(token) if token else None
    if scope is None:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
    if method.startswith(INGEST_PREFIX):
        if not scope.may_ingest:
            raise AuthError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"token {scope.name!r} may not push flows (needs ingest or admin)",
            )
    elif not scope.reads:
        raise AuthError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"token {scope.name!r} may not read (needs admin or namespaces)",
        )
    return scope


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:
        return "?"


async def _let_first_message_arrive(context: Any) -> None:
    """Before refusing a client-streaming call, wait (at most 1 s) for the client's
    first message: a Python aio client whose first write races with our status sees
    only INTERNAL ("Failed execute_batch") and never learns why it was refused."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(context.read(), timeout=1.0)


def _wrap(
    behavior: Callable[..., Any],
    store: TokenStore,
    method: str,
    stream_out: bool,
    local_admin: bool = False,
    stream_in: bool = False,
) -> Any:
    """A handler behavior that authorizes the call, then runs with the caller's scope."""

    async def check(context: Any) -> Scope | None:
        if local_admin and _peer(context).startswith("unix:"):
            return LOCAL
        try:
            return authorize(store, method, context.invocation_metadata())
        except AuthError as exc:
            log.warning("refused %s from %s: %s", method, _peer(context), exc.message)
            if stream_in:
                await _let_first_message_arrive(context)
            await context.abort(exc.code, exc.message)
            raise  # abort raises

    if stream_out and inspect.isasyncgenfunction(behavior):

        async def gen(request: Any, context: Any) -> Any:
            scope = await check(context)
            token = set_scope(scope) if scope is not None else None
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                if token is not None:
                    reset_scope(token)

        return gen

    async def call(request: Any, context: Any) -> Any:
        scope = await check(context)
        token = set_scope(scope) if scope is not None else None
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            if token is not None:
                reset_scope(token)

    return call


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token of every call (see the module doc). With
    ``local_admin`` calls over a unix socket (owner-only) need no token."""

    def __init__(self, store: TokenStore, *, local_admin: bool = False) -> None:
        self.store = store
        self.local_admin = local_admin

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        store = self.store
        h: Any = handler
        if h.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap(h.unary_unary, store, method, False, self.local_admin),
                request_deserializer=h.request_deserializer,
                response_serializer=h.response_serializer,
            )
        if h.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap(h.unary_stream, store, method, True, self.local_admin),
                request_deserializer=h.request_deserializer,
                response_serializer=h.response_serializer,
            )
        if h.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap(h.stream_unary, store, method, False, self.local_admin, stream_in=True),
                request_deserializer=h.request_deserializer,
                response_serializer=h.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap(h.stream_stream, store, method, True, self.local_admin, stream_in=True),
            request_deserializer=h.request_deserializer,
            response_serializer=h.response_serializer,
        )
