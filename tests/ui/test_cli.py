"""`sensilla ui`: flags, checks, and the Streamlit command it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensilla.cli.commands import ui as ui_cmd
from sensilla.cli.main import build_parser, main
from ui.config import RelayConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("argv", "message"), [
    (["--relay", "nohost"], "--relay: expected HOST:PORT"),
    (["--relay", "h:99999"], "--relay: expected HOST:PORT"),
    (["--port", "0"], "--port: 0 is not a port number"),
    (["--tls-ca", "/nonexistent/sui-ca.pem"], "--tls-ca: no such file"),
    (["--token-file", "/nonexistent/sui-token"], "--token-file: no such file"),
    (["--tls-cert", __file__], "--tls-cert and --tls-key go together"),
    (["--timeout", "0"], "--timeout: must be positive"),
])
def test_sui_cli_rejects_bad_flags_without_starting(argv: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", *argv]) == 2
    assert message in capsys.readouterr().err


def test_sui_cli_flags_become_the_ui_environment(tmp_path: Path) -> None:
    ca, cert, key, token = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem", "token"))
    for f in (ca, cert, key, token):
        f.write_text("x")
    args = build_parser().parse_args([
        "ui", "--relay", "relay.example:4245", "--tls-ca", str(ca), "--tls-cert", str(cert),
        "--tls-key", str(key), "--token-file", str(token), "--tls-server-name", "relay",
        "--timeout", "4"])
    cfg = ui_cmd.relay_config(args)
    assert cfg == RelayConfig(address="relay.example:4245", tls_ca=str(ca), tls_cert=str(cert),
                              tls_key=str(key), tls_server_name="relay", token_file=str(token),
                              timeout=4.0)
    argv, env = ui_cmd.streamlit_command(cfg, port=8600, address="127.0.0.1")
    assert argv[1:4] == ["-m", "streamlit", "run"]
    assert argv[4].endswith("ui/app.py") and Path(argv[4]).is_file()
    for flag in ("--server.headless=true", "--browser.gatherUsageStats=false",
                 "--server.address=127.0.0.1", "--server.port=8600",
                 "--client.showErrorDetails=none"):
        assert flag in argv
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert RelayConfig.from_env(env) == cfg
    assert "t0ken" not in " ".join(argv)  # the token travels as a file path only


def test_sui_cli_defaults_bind_loopback() -> None:
    args = build_parser().parse_args(["ui"])
    assert (args.relay, args.port, args.address) == ("127.0.0.1:4245", 8501, "127.0.0.1")
    argv, _env = ui_cmd.streamlit_command(ui_cmd.relay_config(args))
    assert "--server.address=127.0.0.1" in argv
