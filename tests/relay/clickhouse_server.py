"""A throwaway clickhouse-server (Debian's 18.16) for tests: its own config, data and
logs in a temporary directory, a free loopback port, a password; stopped and removed
afterwards, on failure too."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SERVER_BIN = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/log/server.log</log>
    <errorlog>{d}/log/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
{tls}
</yandex>
"""

_TLS = """  <tcp_port_secure>{port}</tcp_port_secure>
  <openSSL><server>
    <certificateFile>{d}/server.crt</certificateFile>
    <privateKeyFile>{d}/server.key</privateKeyFile>
    <verificationMode>none</verificationMode>
    <loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions>
    <disableProtocols>sslv2,sslv3</disableProtocols>
    <preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><{user}><password>{password}</password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></{user}></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
"""


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies (even by SIGKILL).

    The kernel ties PDEATHSIG to the thread that forked, not to the process: a server
    started from a short-lived thread (asyncio.to_thread's pool, shut down at the end of
    asyncio.run) would be killed with it. Servers are therefore always spawned from
    _SPAWNER's one thread, which lives as long as the test process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-spawner")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> bool:
    return os.path.exists(SERVER_BIN)


class ClickHouseServer:
    """``start()`` then ``url``; ``stop()`` (SIGTERM, then SIGKILL) and ``cleanup()``.
    ``pause()``/``resume()`` freeze the server (SIGSTOP/SIGCONT) to simulate a stall."""

    def __init__(self, prefix: str = "sst-ch-", tls: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.user = "sst"
        self.password = secrets.token_hex(8) + "'\"x"  # quotes: URL-encoded, never logged
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.dir / sub).mkdir()
        tls_xml = ""
        if tls:
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(self.dir / "server.key"),
                    "-out",
                    str(self.dir / "server.crt"),
                ],
                check=True,
                capture_output=True,
            )
            tls_xml = _TLS.format(d=self.dir, port=self.tls_port)
        (self.dir / "config.xml").write_text(
            _CONFIG.format(d=self.dir, port=self.port, tls=tls_xml)
        )
        pw = self.password.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        (self.dir / "users.xml").write_text(_USERS.format(user=self.user, password=pw))

    @property
    def ca_file(self) -> Path:
        return self.dir / "server.crt"

    @property
    def tls_url(self) -> str:
        from urllib.parse import quote

        pw = quote(self.password, safe="")
        return f"clickhouses://{self.user}:{pw}@127.0.0.1:{self.tls_port}/sst"

    @property
    def url(self) -> str:
        from urllib.parse import quote

        return f"clickhouse://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/sst"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.dir / "log" / "stderr.log", "ab") as stderr:
            self.proc = _SPAWNER.submit(
                subprocess.Popen,
                [SERVER_BIN, f"--config-file={self.dir / 'config.xml'}"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            ).result()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                if self._ping():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"clickhouse-server did not start: {self.log_tail()}")

    def _ping(self) -> bool:
        from clickhouse_driver import Client

        try:
            Client(
                "127.0.0.1",
                port=self.port,
                user=self.user,
                password=self.password,
                connect_timeout=1,
            ).execute("SELECT 1")
            return True
        except Exception:
            return False

    def log_tail(self) -> str:
        out = []
        for name in ("error.log", "stderr.log"):
            p = self.dir / "log" / name
            if p.exists():
                out.append(p.read_text(errors="replace")[-2000:])
        return "\n".join(out)

    def pause(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[ClickHouseServer]:
    server = ClickHouseServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
