"""Engines the filter tests evaluate compiled SQL on: chDB (in a worker process) and,
when Debian's clickhouse-server is installed, a private ClickHouse 18.16 server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sensilla.filters import FLOW_COLUMNS, CompiledFilter

ROOT = Path(__file__).resolve().parents[2]
TABLE = "sfi_flows"


def create_table_sql(
    table: str = TABLE, engine: str = "MergeTree ORDER BY (collector_id, boot_id, seq)"
) -> str:
    cols = ", ".join(f"`{name}` {ch_type}" for name, ch_type in FLOW_COLUMNS.items())
    return f"CREATE TABLE {table} ({cols}) ENGINE = {engine}"


class ChdbWorker:
    """chDB in a child process; rows in, matching ``seq`` values out."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.filters.chworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )

    def call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("chDB worker exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def must(self, **req: Any) -> dict[str, Any]:
        reply = self.call(**req)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply

    def create(self, table: str = TABLE) -> None:
        self.must(op="exec", sql=f"DROP TABLE IF EXISTS {table}")
        self.must(op="exec", sql=create_table_sql(table))

    def insert(self, rows: list[dict[str, Any]], table: str = TABLE) -> None:
        self.must(op="insert", table=table, rows=rows)

    def truncate(self, table: str = TABLE) -> None:
        self.must(op="exec", sql=f"TRUNCATE TABLE {table}")

    def matching(self, compiled: CompiledFilter, table: str = TABLE) -> list[int]:
        where, params = compiled.sql("chdb")
        reply = self.must(
            op="query", sql=f"SELECT seq FROM {table} WHERE {where} ORDER BY seq", params=params
        )
        return [int(r["seq"]) for r in reply["rows"]]

    def count(self, table: str = TABLE) -> int:
        reply = self.must(op="query", sql=f"SELECT count() AS n FROM {table}")
        return int(reply["rows"][0]["n"])

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClickHouse18:
    """A private clickhouse-server (Debian's 18.16) on a free loopback port."""

    BINARY = "/usr/sbin/clickhouse-server"

    @classmethod
    def available(cls) -> bool:
        return os.access(cls.BINARY, os.X_OK)

    def __init__(self) -> None:
        from clickhouse_driver import Client

        self.dir = Path(tempfile.mkdtemp(prefix="sfi_ch_"))
        self.port = _free_port()
        d = self.dir
        (d / "users.xml").write_text(
            "<?xml version='1.0'?><yandex><profiles><default></default></profiles>"
            "<users><default><password></password><networks><ip>127.0.0.1</ip></networks>"
            "<profile>default</profile><quota>default</quota></default></users>"
            "<quotas><default></default></quotas></yandex>"
        )
        (d / "config.xml").write_text(
            "<?xml version='1.0'?><yandex>"
            f"<logger><level>warning</level><log>{d}/server.log</log>"
            f"<errorlog>{d}/err.log</errorlog><console>0</console></logger>"
            f"<listen_host>127.0.0.1</listen_host><tcp_port>{self.port}</tcp_port>"
            f"<path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>"
            f"<user_files_path>{d}/user_files/</user_files_path>"
            f"<format_schema_path>{d}/format_schemas/</format_schema_path>"
            f"<users_config>{d}/users.xml</users_config>"
            "<default_profile>default</default_profile><default_database>default</default_database>"
            "<mark_cache_size>67108864</mark_cache_size><max_concurrent_queries>20</max_concurrent_queries>"
            "<timezone>UTC</timezone></yandex>"
        )
        self.log = open(d / "stdout.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [self.BINARY, f"--config-file={d}/config.xml"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = Client(
            host="127.0.0.1", port=self.port, connect_timeout=2, send_receive_timeout=30
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.execute("SELECT 1")
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("clickhouse-server did not start") from None
                time.sleep(0.2)

    def create(self, table: str = TABLE) -> None:
        self.client.execute(f"DROP TABLE IF EXISTS {table}")
        self.client.execute(create_table_sql(table))

    def insert(self, rows: list[dict[str, Any]], table: str = TABLE) -> None:
        names = list(FLOW_COLUMNS)
        self.client.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES",
            [tuple(r[n] for n in names) for r in rows],
        )

    def truncate(self, table: str = TABLE) -> None:
        # 18.16 has no TRUNCATE for MergeTree
        self.create(table)

    def matching(self, compiled: CompiledFilter, table: str = TABLE) -> list[int]:
        where, params = compiled.sql("pyformat")
        rows = self.client.execute(f"SELECT seq FROM {table} WHERE {where} ORDER BY seq", params)
        return [int(r[0]) for r in rows]

    def count(self, table: str = TABLE) -> int:
        return int(self.client.execute(f"SELECT count() FROM {table}")[0][0])

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.log.close()
            shutil.rmtree(self.dir, ignore_errors=True)
