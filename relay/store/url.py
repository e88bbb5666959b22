"""Store URLs.

- ``chdb:///path/to/dir`` — embedded ClickHouse (chDB) with its data in a directory
  (the default store). One process owns a path. ``?database=NAME`` (default
  ``sensilla``).
- ``clickhouse://[user[:password]@]host[:port][/database][?options]`` — a ClickHouse
  server over the native protocol (clickhouse-driver). ``clickhouses://`` or
  ``?secure=1`` for TLS (port 9440 by default); ``?verify=0`` skips certificate
  checks, ``?ca_certs=FILE`` names a CA bundle; ``?compression=lz4|zstd|none``
  (default lz4); ``?connect_timeout=S``, ``?send_receive_timeout=S``.

Credentials, in order of precedence: the URL; ``?password_file=FILE`` or the file
named by ``SENSILLA_CLICKHOUSE_PASSWORD_FILE`` (first line); the environment
(``SENSILLA_CLICKHOUSE_USER``, ``SENSILLA_CLICKHOUSE_PASSWORD``). Passwords never
appear in ``repr``, ``redacted()`` or any message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_CHDB_PATH = "/var/lib/sensilla/relay"
DEFAULT_DATABASE = "sensilla"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

ENV_USER = "SENSILLA_CLICKHOUSE_USER"
ENV_PASSWORD = "SENSILLA_CLICKHOUSE_PASSWORD"
ENV_PASSWORD_FILE = "SENSILLA_CLICKHOUSE_PASSWORD_FILE"

_CH_OPTIONS = {
    "secure",
    "verify",
    "ca_certs",
    "compression",
    "password_file",
    "connect_timeout",
    "send_receive_timeout",
    "database",
}


class StoreURLError(ValueError):
    """A store URL is malformed; the message names the part (never the password)."""


@dataclass(frozen=True)
class StoreURL:
    scheme: str  # "chdb" or "clickhouse"
    database: str = DEFAULT_DATABASE
    path: str = ""  # chdb
    host: str = ""
    port: int = 9000
    user: str = "default"
    password: str = field(default="", repr=False)
    secure: bool = False
    verify: bool = True
    ca_certs: str = ""
    compression: str | bool = False
    connect_timeout: float = 10.0
    send_receive_timeout: float = 60.0

    def redacted(self) -> str:
        if self.scheme == "chdb":
            return f"chdb://{self.path}?database={self.database}"
        scheme = "clickhouses" if self.secure else "clickhouse"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user}@{host}:{self.port}/{self.database}"

    def __str__(self) -> str:
        return self.redacted()


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise StoreURLError(f"store URL option {name!r} must be 0 or 1")


def _number(name: str, value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise StoreURLError(f"store URL option {name!r} must be a number") from None
    if not 0 < n <= 3600:
        raise StoreURLError(f"store URL option {name!r} must be in (0, 3600]")
    return n


def _database(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise StoreURLError(
            "store URL database must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )
    return name


def _read_password_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StoreURLError(f"cannot read the password file {path}: {exc.strerror}") from None
    return text.splitlines()[0] if text else ""


def parse_store_url(text: str, env: dict[str, str] | None = None) -> StoreURL:
    env = dict(os.environ) if env is None else env
    if "://" not in text:
        raise StoreURLError("store URL must start with chdb:// or clickhouse://")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if scheme == "chdb":
        unknown = set(query) - {"database"}
        if unknown:
            raise StoreURLError(f"unknown chdb store URL option {sorted(unknown)[0]!r}")
        path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not path:
            path = DEFAULT_CHDB_PATH
        if not path.startswith("/"):
            raise StoreURLError("chdb store URL needs an absolute path: chdb:///path/to/dir")
        return StoreURL(
            scheme="chdb",
            path=os.path.normpath(path),
            database=_database(query.get("database", DEFAULT_DATABASE)),
        )
    if scheme not in ("clickhouse", "clickhouses"):
        raise StoreURLError(f"unknown store URL scheme {scheme!r} (chdb or clickhouse)")
    unknown = set(query) - _CH_OPTIONS
    if unknown:
        raise StoreURLError(f"unknown clickhouse store URL option {sorted(unknown)[0]!r}")
    secure = scheme == "clickhouses"
    if "secure" in query:
        secure = _flag("secure", query["secure"])
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise StoreURLError("store URL port must be a number in 1..65535") from None
    if not host:
        raise StoreURLError("clickhouse store URL needs a host")
    db_path = parts.path.lstrip("/")
    database = _database(query.get("database") or db_path or DEFAULT_DATABASE)

    user = unquote(parts.username) if parts.username else ""
    password = unquote(parts.password) if parts.password is not None else None
    if password is None:
        pw_file = query.get("password_file") or env.get(ENV_PASSWORD_FILE, "")
        password = _read_password_file(pw_file) if pw_file else env.get(ENV_PASSWORD, "")
    if not user:
        user = env.get(ENV_USER, "") or "default"

    compression: str | bool = "lz4"
    if "compression" in query:
        c = query["compression"].lower()
        if c in ("none", "0", "off", "false", ""):
            compression = False
        elif c in ("lz4", "lz4hc", "zstd"):
            compression = c
        else:
            raise StoreURLError("store URL option 'compression' must be lz4, zstd or none")
    if compression:
        compression = _available_compression(compression)

    return StoreURL(
        scheme="clickhouse",
        host=host,
        port=port or (9440 if secure else 9000),
        user=user,
        password=password,
        database=database,
        secure=secure,
        verify=_flag("verify", query["verify"]) if "verify" in query else True,
        ca_certs=query.get("ca_certs", ""),
        compression=compression,
        connect_timeout=_number("connect_timeout", query.get("connect_timeout", "10")),
        send_receive_timeout=_number(
            "send_receive_timeout", query.get("send_receive_timeout", "60")
        ),
    )


def _available_compression(method: str | bool) -> str | bool:
    """The driver needs the compression library (lz4, zstd) and cityhash."""
    try:
        import clickhouse_cityhash  # noqa: F401

        if method in ("lz4", "lz4hc"):
            import lz4  # noqa: F401
        elif method == "zstd":
            import zstd  # noqa: F401
    except ImportError as exc:
        raise StoreURLError(
            f"compression {method} needs the Python package {exc.name}; "
            "install it or use ?compression=none"
        ) from None
    return method
