"""Acceptance 3: a file exporter and a syslog exporter (to a local receiver) survive
five relay SIGKILLs and restarts while two synthetic collectors ship: the files hold
every flow exactly once and rotate at the configured size; the receiver gets every
flow at least once, duplicates only from the last unconfirmed batch before a kill,
each carrying the same flow uuid."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from relay.ingest.synthetic import SyntheticCollector
from sensilla.ocsf import validate_event
from tests.relay.relay_process import RelayProcess
from tests.relay.siem.receiver import SyslogReceiver

FLOWS_PER_CLIENT = 20_000
BATCH = 500
MAX_FILE = 512 * 1024


def _file_positions(out: Path) -> tuple[list[tuple[str, int, int]], list[int]]:
    got, sizes = [], []
    for f in sorted(out.glob("flows*.log")):
        try:  # the exporter may rotate the file between the listing and the read
            data = f.read_bytes()
        except FileNotFoundError:
            return _file_positions(out)
        sizes.append(len(data))
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is not there yet
        for line in whole.splitlines():
            rec = json.loads(line)
            p = rec["flow"]["extensions"]["position"]
            got.append((p["collector_id"], int(p["boot_id"]), int(p["sequence"])))
    return got, sizes


@pytest.mark.timeout(900)
def test_ssi_exporters_survive_five_sigkills() -> None:
    work = Path(tempfile.mkdtemp(prefix="ssi-exp-"))
    receiver = SyslogReceiver()
    receiver.start()
    out = work / "out"
    cfg = {
        "state_dir": str(work / "state"),
        "exporters": [
            {
                "name": "file-json",
                "type": "file",
                "format": "json",
                "batch_size": BATCH,
                "poll_interval_s": 0.2,
                "file": {"path": str(out / "flows.log"), "max_size_bytes": MAX_FILE},
            },
            {
                "name": "siem",
                "type": "syslog",
                "format": "ocsf",
                "batch_size": BATCH,
                "poll_interval_s": 0.2,
                "syslog": {"address": receiver.address, "confirm_timeout_s": 20},
            },
        ],
    }
    cfg_path = work / "exporters.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    relay = RelayProcess(f"chdb://{work}/store", work, args=["--exporter-config", str(cfg_path)])
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    kills = 0
    try:
        relay.start()
        clients = [
            SyntheticCollector(
                relay.address,
                f"ssi-exp-{i}",
                FLOWS_PER_CLIENT,
                batch_size=BATCH,
                boot_id=time.time_ns() + i,
                max_rate=2500,
                seed=i + 3,
                backoff_max_s=0.5,
            )
            for i in range(2)
        ]
        total = 2 * FLOWS_PER_CLIENT

        async def killer() -> None:
            nonlocal kills
            for _ in range(5):
                # some export progress since the (re)start, then a random moment
                base = len(receiver.messages())
                deadline = time.monotonic() + 120
                while len(receiver.messages()) <= base:
                    assert time.monotonic() < deadline, relay.tail()
                    await asyncio.sleep(0.05)
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                relay.kill()
                kills += 1
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                await asyncio.to_thread(relay.start)

        async def main() -> None:
            ship = asyncio.gather(*(c.run(timeout=600) for c in clients))
            await asyncio.gather(ship, killer())

        t0 = time.monotonic()
        asyncio.run(main())
        # the exporters catch up after the last restart
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            files, _ = _file_positions(out)
            syslog = {(m.sd["collector"], m.sd["boot"], m.sd["seq"]) for m in receiver.messages()}
            if len(files) >= total and len(syslog) >= total:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # anything written after catching up would be a duplicate
        seconds = time.monotonic() - t0
        expected = {
            (c.collector_id, c.boot_id, s) for c in clients for s in range(1, c.total_flows + 1)
        }

        # files: every flow exactly once, every file within the size limit
        files, sizes = _file_positions(out)
        assert len(files) == len(set(files)) == total, relay.tail()
        assert set(files) == expected
        assert len(sizes) > 5 and max(sizes) <= MAX_FILE

        # syslog: every flow at least once; duplicates only from the batch sent last on
        # the connection before, with the same uuid as the first copy
        conns = [c for c in receiver.connections if c]
        seen: dict[tuple[str, int, int], str] = {}
        dup_total = 0
        for k, conn in enumerate(conns):
            tail = {
                (m.sd["collector"], int(m.sd["boot"]), int(m.sd["seq"]))
                for m in (conns[k - 1][-BATCH:] if k else [])
            }
            for m in conn:
                key = (m.sd["collector"], int(m.sd["boot"]), int(m.sd["seq"]))
                if key in seen:
                    dup_total += 1
                    assert seen[key] == m.sd["uuid"], "a duplicate with another uuid"
                    assert key in tail, f"duplicate {key} not from the last batch before"
                else:
                    seen[key] = m.sd["uuid"]
        assert set(seen) == expected
        assert dup_total <= len(conns) * BATCH
        counts = Counter(len(c) for c in conns)
        # the syslog messages are valid OCSF
        for m in receiver.messages()[:: max(1, total // 500)]:
            assert validate_event(json.loads(m.msg)) == []
        print(
            f"\nssi exporters sigkill: seed {seed}, {kills} kills, {total} flows, "
            f"{seconds:.1f}s; files: {len(sizes)} (max {max(sizes)} B of {MAX_FILE}); "
            f"syslog: {len(conns)} connections, {sum(len(c) for c in conns)} messages, "
            f"{dup_total} duplicates, {receiver.torn} torn frames; sizes {dict(counts)}; "
            f"file recoveries: {relay.log_text().count('recovery:')}"
        )
        assert kills == 5
        assert relay.log_text().count("=== start") == 6
    finally:
        relay.stop()
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)
