"""The demo's traffic generator: a realistic mix between the demo's pods.

HTTP-like TCP exchanges along the application's paths, DNS-like UDP to coredns,
metrics scrapes, attempts that policies deny (at ingress and at egress), traffic
into the audit-mode namespace, and an occasional port scan. Every connection is
real (sensilla.lab.probe), opened from the source pod's network namespace.

Run as `python -m sensilla.demo.traffic LAB_NAME [--rate R]`.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass

from sensilla.lab.layout import LabLayout
from sensilla.lab.probe import probe
from sensilla.lab.runtime import Lab


@dataclass(frozen=True)
class Job:
    name: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    port: int
    protocol: str
    weight: float  # relative frequency
    timeout: float = 1.0


FRONTEND = "shop/frontend-6b7f9c-x2k4p"
API = "shop/api-5d8c4b-q9w2m"
DB = "shop/db-0"
PROMETHEUS = "monitoring/prometheus-0"
COREDNS = "kube-system/coredns-7db6d8-abcde"

JOBS = (
    Job("http frontend->api", (FRONTEND,), (API,), 8080, "TCP", 6),
    Job("sql api->db", (API,), (DB,), 5432, "TCP", 5),
    Job("ingress to frontend", ("x/b", "z/a"), (FRONTEND,), 8080, "TCP", 3),
    Job("dns lookups", (FRONTEND, API, DB, "x/a", "y/b"), (COREDNS,), 53, "UDP", 5),
    Job("metrics scrape", (PROMETHEUS,), (FRONTEND, API, DB), 9090, "TCP", 1),
    Job("z internal", ("z/a",), ("z/b", "z/c"), 80, "TCP", 2),
    Job("x talks to y (audited)", ("x/b",), ("y/a", "y/c"), 80, "TCP", 1.5),
    Job("denied: x/a->db", ("x/a",), (DB,), 5432, "TCP", 1, 0.3),
    Job("denied: into x/c", ("z/b", "y/a"), ("x/c",), 80, "TCP", 1, 0.3),
    Job("denied: api egress", (API,), ("x/a",), 80, "TCP", 0.5, 0.3),
    Job("denied: x into z", ("x/a",), ("z/a",), 80, "UDP", 0.5, 0.3),
)


def scan(layout: LabLayout, stop: threading.Event) -> None:
    """An occasional port scan from z/c against the api pod."""
    src, dst = layout.pod("z/c"), layout.pod(API)
    while not stop.wait(random.uniform(20, 40)):
        for port in range(8070, 8090):
            if stop.is_set():
                return
            probe(layout, [(src, dst)], port, "TCP", timeout=0.2)


def run(lab_name: str, rate: float, stop: threading.Event) -> None:
    layout = Lab(lab_name).layout()
    weights = [j.weight for j in JOBS]
    threading.Thread(target=scan, args=(layout, stop), daemon=True).start()
    workers: list[threading.Thread] = []

    def worker() -> None:
        while not stop.is_set():
            job = random.choices(JOBS, weights)[0]
            pairs = [
                (
                    layout.pod(random.choice(job.sources)),
                    layout.pod(random.choice(job.destinations)),
                )
            ]
            probe(layout, pairs, job.port, job.protocol, timeout=job.timeout)
            stop.wait(random.expovariate(rate / len(workers)))

    for _ in range(3):
        t = threading.Thread(target=worker, daemon=True)
        workers.append(t)
    for t in workers:
        t.start()
    while not stop.wait(0.5):
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sensilla.demo.traffic")
    parser.add_argument("lab")
    parser.add_argument("--rate", type=float, default=15.0, help="connections per second")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    run(args.lab, args.rate, stop)
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
