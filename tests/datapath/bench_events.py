"""Measurements of the event path (not a test: speed is never asserted).

    .venv/bin/python -m tests.datapath.bench_events [--trials 100]

1. Lone-event latency: at idle, one UDP datagram opens a new connection (one
   START event); the time from send() to the reader's poll() (blocked in its own
   thread) returning it, with the default reader (wakeup_events=32, drain timer
   25 ms). p50/p90/p99/max.
2. Reader throughput: level none, a burst of UDP datagrams; events received
   per second of reader time and losses.
"""

from __future__ import annotations

import argparse
import random
import resource
import socket
import threading
import time

import numpy as np

from sensilla.lab import netns as N
from tests.datapath.conftest import lab_datapath


def lone_event_latency(trials: int) -> list[float]:
    """The reader waits in poll() in its own thread (as the collector's does);
    the sender sends at random idle moments."""
    arrivals: dict[int, float] = {}
    sends: dict[int, float] = {}
    stop = threading.Event()
    with lab_datapath("sdpb") as ld:
        src, dst = ld.pod("x/a"), ld.pod("y/a")
        reader = ld.dp_of("x/a").event_reader()

        def read() -> None:
            while not stop.is_set():
                ev, _ = reader.poll(0.5)
                now = time.monotonic()
                for port in ev["dport"]:
                    arrivals.setdefault(int(port), now)

        t = threading.Thread(target=read)
        t.start()
        try:
            with N.entered(src.netns):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(trials):
                time.sleep(random.uniform(0.05, 0.15))  # idle
                port = 20000 + i
                sends[port] = time.monotonic()
                u.sendto(b"x", (dst.ipv4, port))
            time.sleep(0.3)
            u.close()
        finally:
            stop.set()
            t.join()
            reader.close()
    missing = [p for p in sends if p not in arrivals]
    if missing:
        raise RuntimeError(f"no event for {len(missing)} trials")
    return [arrivals[p] - sends[p] for p in sends]


def throughput(packets: int) -> tuple[int, int, float, float]:
    with lab_datapath("sdpb") as ld:
        for dp in ld.dps.values():
            dp.set_aggregation("none")
        src, dst = ld.pod("x/a"), ld.pod("x/c")  # same node: two events per packet
        dp = ld.dp_of("x/a")
        reader = dp.event_reader(pages=256, wakeup_events=32)
        try:
            reader.poll(0.05)
            with N.entered(src.netns):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            got = 0
            lost = 0
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            sent = 0
            while sent < packets:
                for _ in range(256):
                    u.sendto(b"x", (dst.ipv4, 9))
                sent += 256
                ev, lo = reader.poll(0)
                got += len(ev)
                lost += lo.total
            while True:
                ev, lo = reader.poll(0.2)
                if not len(ev) and not lo:
                    break
                got += len(ev)
                lost += lo.total
            wall = time.monotonic() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            u.close()
        finally:
            reader.close()
    return got, lost, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--packets", type=int, default=200_000)
    args = ap.parse_args()
    lat = sorted(lone_event_latency(args.trials))
    ms = np.array(lat) * 1000
    print(
        f"lone event latency over {len(lat)} trials: p50 {np.percentile(ms, 50):.1f} ms, "
        f"p90 {np.percentile(ms, 90):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
        f"max {ms.max():.1f} ms"
    )
    got, lost, wall, cpu = throughput(args.packets)
    print(
        f"level none, {args.packets} datagrams: {got} events received, {lost} lost, "
        f"{wall:.2f} s wall, process CPU {cpu:.2f} s (sender included)"
    )


if __name__ == "__main__":
    main()
