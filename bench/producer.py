"""A paced flow-event producer: runs a pinned TC program of Sensilla with
BPF_PROG_TEST_RUN and a repeat count on one crafted packet, so the kernel emits
events at a chosen rate, far beyond what real senders reach on two cores.

    python -m bench.producer --prog /sys/fs/bpf/sensilla/NODE/to_pod --ifindex N \\
        --packet HEX
    stdin:  "run RATE SECONDS"   -> stdout: {"produced": n, "seconds": s}
            "quit"

At aggregation level `none` every run of the program on a packet of a known
connection is one PACKET event (the first is the connection's START). The
process must run in the namespace where `ifindex` exists (nsenter), since the
kernel resolves the context's ifindex there. Each step of the pacing loop runs at
most 5 ms worth of events, then sleeps until the next is due.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from datapath import bpfsys
from datapath.datapath import _skb_ctx


def pace(fd: int, packet: bytes, ctx: bytes, rate: float, seconds: float) -> int:
    total = int(rate * seconds)
    chunk = max(1, int(rate * 0.005))
    done = 0
    t0 = time.monotonic()
    while done < total:
        due = min(total, int(rate * (time.monotonic() - t0))) - done
        if due <= 0:
            time.sleep(min(0.002, max(0.0, (done + 1) / rate - (time.monotonic() - t0))))
            continue
        n = min(due, chunk)
        bpfsys.prog_test_run(fd, packet, ctx=ctx, repeat=n)
        done += n
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prog", required=True)
    ap.add_argument("--ifindex", type=int, required=True)
    ap.add_argument("--packet", required=True, help="the Ethernet frame, hex")
    args = ap.parse_args(argv)
    fd = bpfsys.obj_get(args.prog)
    packet = bytes.fromhex(args.packet)
    ctx = _skb_ctx(args.ifindex)
    bpfsys.prog_test_run(fd, packet, ctx=ctx, repeat=1)  # the connection's START
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "run":
            rate, seconds = float(cmd[1]), float(cmd[2])
            t0 = time.monotonic()
            n = pace(fd, packet, ctx, rate, seconds)
            print(json.dumps({"produced": n, "seconds": time.monotonic() - t0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
