"""`sensilla ui`: the web dashboard (Streamlit) reading from a relay.

Runs Streamlit headless with usage statistics off, bound to loopback unless
``--address`` says otherwise. The relay's address and credentials reach the app
through the environment (see ui/data.py, RelayConfig); a bearer token is passed as
a file path, never as a value, so it does not show in process listings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sensilla.cli.errors import UsageError

DEFAULT_PORT = 8501


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ui",
        help="run the web dashboard against a relay",
        description="Run Sensilla's web dashboard (Streamlit), reading from a relay.",
    )
    p.add_argument("--relay", default="127.0.0.1:4245",
                   help="relay address HOST:PORT (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="port to serve the dashboard on (default: %(default)s)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--tls-ca", metavar="FILE", help="CA bundle (PEM) to verify the relay; "
                   "turns TLS on")
    p.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", metavar="FILE", help="client private key (PEM) for mutual TLS")
    p.add_argument("--tls-server-name", metavar="NAME",
                   help="expected server name in the relay's certificate")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding a bearer token sent to the relay")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext to a relay that is not on this machine (no TLS)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for each relay call (default: %(default)s)")
    p.add_argument("--debug", action="store_true",
                   help="show error details in the browser (development only)")
    p.set_defaults(handler=_ui)


def _check_file(flag: str, path: str | None) -> str:
    if not path:
        return ""
    if not Path(path).is_file():
        raise UsageError(f"{flag}: no such file: {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: cannot read {path}")
    return str(Path(path).resolve())


def _check_relay(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not (
        0 < int(port) < 65536
    ):
        raise UsageError(f"--relay: expected HOST:PORT, got {address!r}")
    return address


def relay_config(args: argparse.Namespace) -> Any:
    """The ui.data.RelayConfig the flags describe (files checked)."""
    from ui.config import RelayConfig

    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.timeout <= 0:
        raise UsageError("--timeout: must be positive")
    from sensilla.security.tls import is_local_target

    address = _check_relay(args.relay)
    tls = bool(args.tls_ca or args.tls_cert)
    if getattr(args, "insecure", False) and tls:
        raise UsageError("--insecure and --tls-* exclude each other")
    if not tls and not getattr(args, "insecure", False) and not is_local_target(address):
        raise UsageError(
            f"--relay {address}: not a local address: give --tls-ca (and --tls-cert/--tls-key "
            "for mutual TLS), or --insecure for plaintext"
        )
    return RelayConfig(
        address=_check_relay(args.relay),
        tls_ca=_check_file("--tls-ca", args.tls_ca),
        tls_cert=_check_file("--tls-cert", args.tls_cert),
        tls_key=_check_file("--tls-key", args.tls_key),
        tls_server_name=args.tls_server_name or "",
        token_file=_check_file("--token-file", args.token_file),
        timeout=float(args.timeout),
    )


def streamlit_command(
    cfg: Any, *, port: int = DEFAULT_PORT, address: str = "127.0.0.1", debug: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve the dashboard (for callers
    that run it as a child process, such as the demo)."""
    import ui

    app = Path(ui.__file__).resolve().parent / "app.py"
    argv = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        f"--server.address={address}",
        f"--server.port={port}",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        "--global.developmentMode=false",
        "--client.toolbarMode=minimal",
        f"--client.showErrorDetails={'full' if debug else 'none'}",
        "--theme.base=light",
    ]  # fmt: skip
    env = dict(os.environ)
    env.update(cfg.to_env())
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return argv, env


def _ui(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port: {args.port} is not a port number")
    cfg = relay_config(args)
    argv, env = streamlit_command(cfg, port=args.port, address=args.address, debug=args.debug)
    host = f"[{args.address}]" if ":" in args.address else args.address
    print(f"sensilla ui: http://{host}:{args.port} (relay {cfg.address}"
          f"{', TLS' if cfg.tls else ''})", file=sys.stderr, flush=True)
    # Replace this process: signals (Ctrl-C, SIGTERM from a supervisor) reach Streamlit.
    os.execve(sys.executable, argv, env)
    return 0  # not reached
