"""Transport security and access control shared by Sensilla's servers and clients.

- ``sensilla.security.tls``: server credentials from certificate files (mutual TLS
  when client CAs are given), re-read when the files change (rotation without a
  restart); client channels (TLS, mutual TLS, or plaintext only where allowed),
  credentials re-read for every new channel.
- ``sensilla.security.tokens``: bearer tokens. The server's token file holds
  SHA-256 digests, never tokens, each mapped to a name and a scope (admin, a set of
  namespaces, ingest); a grpc.aio interceptor checks every call and sets the
  caller's :class:`~sensilla.security.scope.Scope`.
- ``sensilla.security.scope``: what a caller may see (namespaces of flows).
- ``sensilla.security.certs``: a lab CA and certificates (``sensilla certs``).
- ``sensilla.security.flags``: the command-line flags of servers and clients.

See docs/security.md.
"""

from sensilla.security.scope import ADMIN, Scope, current_scope

__all__ = ["ADMIN", "Scope", "current_scope"]
