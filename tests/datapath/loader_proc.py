"""A separate process that loads and attaches a lab's datapaths (for the SIGKILL
and restart tests): `python -m tests.datapath.loader_proc LAB [--once]`.

Prints one JSON line when done ({"load": {node: result}, "attach_changed":
{pod: bool}}), then sleeps until killed (or exits with --once)."""

from __future__ import annotations

import json
import sys
import time

from sensilla.lab.runtime import Lab
from tests.datapath.labdp import LabDatapath


def main(argv: list[str]) -> int:
    lab = Lab(argv[0])
    ld = LabDatapath(lab, lab.layout())
    ld.setup()
    print(
        json.dumps(
            {
                "load": {k: v.value for k, v in ld.load_results.items()},
                "attach_changed": ld.attach_changed,
            }
        ),
        flush=True,
    )
    if "--once" in argv:
        for dp in ld.dps.values():
            dp.close()
        return 0
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
