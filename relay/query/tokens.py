"""SearchFlows page tokens.

A token pins what the first page resolved (the window, so "the last hour" does not
move between pages) and says where the next page starts (the key of the last flow
sent: time, collector, boot, sequence), with a digest of the query (filters and
workload ids) so a token cannot continue a different search. It is opaque to
clients (URL-safe base64 of JSON) and checked strictly when it comes back: anything
malformed is INVALID_ARGUMENT, never SQL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sensilla.protos import query_pb2

VERSION = 1
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class PageToken:
    since_ns: int
    until_ns: int
    key: tuple[int, str, int, int]
    digest: str


def query_digest(req: query_pb2.SearchFlowsRequest) -> str:
    h = hashlib.sha256()
    for f in req.whitelist:
        h.update(b"w" + f.SerializeToString(deterministic=True))
    for f in req.blacklist:
        h.update(b"b" + f.SerializeToString(deterministic=True))
    h.update(b"s" + req.source_workload_id.encode("utf-8", "surrogatepass"))
    h.update(b"d" + req.destination_workload_id.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def encode(token: PageToken) -> str:
    data = {
        "v": VERSION,
        "w": [token.since_ns, token.until_ns],
        "k": list(token.key),
        "q": token.digest,
    }
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _int(v: Any, lo_hi: tuple[int, int]) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo_hi[0] <= v <= lo_hi[1]:
        raise TokenError("not a token from this relay")
    return v


def decode(text: str) -> PageToken:
    if len(text) > 2048 or not text.isascii():
        raise TokenError("not a token from this relay")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TokenError("not a token from this relay") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise TokenError("not a token from this relay (or from another version)")
    w, k, q = data.get("w"), data.get("k"), data.get("q")
    if not (isinstance(w, list) and len(w) == 2 and isinstance(k, list) and len(k) == 4):
        raise TokenError("not a token from this relay")
    if not isinstance(q, str) or len(q) != 24 or not all(c in "0123456789abcdef" for c in q):
        raise TokenError("not a token from this relay")
    if not isinstance(k[1], str) or len(k[1]) > 253:
        raise TokenError("not a token from this relay")
    since, until = _int(w[0], INT64), _int(w[1], INT64)
    key = (_int(k[0], INT64), k[1], _int(k[2], UINT64), _int(k[3], UINT64))
    return PageToken(since, until, key, q)
