"""Where the relay is and how to reach it: the UI's connection settings.

Kept free of Streamlit so that `sensilla ui` can build the environment of the
Streamlit process without importing the app. ui/data.py re-exports these names.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_RELAY = "127.0.0.1:4245"

# Environment variables read by RelayConfig.from_env (set by `sensilla ui`).
ENV_RELAY = "SENSILLA_UI_RELAY"
ENV_TLS_CA = "SENSILLA_UI_TLS_CA"
ENV_TLS_CERT = "SENSILLA_UI_TLS_CERT"
ENV_TLS_KEY = "SENSILLA_UI_TLS_KEY"
ENV_TLS_SERVER_NAME = "SENSILLA_UI_TLS_SERVER_NAME"
ENV_TOKEN_FILE = "SENSILLA_UI_TOKEN_FILE"
ENV_TIMEOUT = "SENSILLA_UI_TIMEOUT"

# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RelayConfig:
    """Where the relay is and how to reach it.

    ``tls_ca`` (a PEM bundle) turns TLS on; ``tls_cert``/``tls_key`` add a client
    certificate (mutual TLS); ``token_file`` holds a bearer token sent as
    ``authorization: Bearer …`` with every call (read at each call, so a rotated
    token is picked up).
    """

    address: str = DEFAULT_RELAY
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_server_name: str = ""
    token_file: str = ""
    timeout: float = 10.0

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RelayConfig:
        env = os.environ if env is None else env
        timeout = cls.timeout
        raw = env.get(ENV_TIMEOUT, "")
        if raw:
            with contextlib.suppress(ValueError):
                timeout = max(0.5, float(raw))
        return cls(
            address=env.get(ENV_RELAY, "") or DEFAULT_RELAY,
            tls_ca=env.get(ENV_TLS_CA, ""),
            tls_cert=env.get(ENV_TLS_CERT, ""),
            tls_key=env.get(ENV_TLS_KEY, ""),
            tls_server_name=env.get(ENV_TLS_SERVER_NAME, ""),
            token_file=env.get(ENV_TOKEN_FILE, ""),
            timeout=timeout,
        )

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` return this configuration."""
        env = {ENV_RELAY: self.address, ENV_TIMEOUT: repr(self.timeout)}
        for name, value in (
            (ENV_TLS_CA, self.tls_ca),
            (ENV_TLS_CERT, self.tls_cert),
            (ENV_TLS_KEY, self.tls_key),
            (ENV_TLS_SERVER_NAME, self.tls_server_name),
            (ENV_TOKEN_FILE, self.token_file),
        ):
            if value:
                env[name] = value
        return env
