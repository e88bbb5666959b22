"""How fast policy and label changes take effect on both lab nodes (root).

    .venv/bin/python -m bench.policy_propagation [--rounds 10]

Brings up a lab with one collector per node, then, for each round, measures from
the moment a change is written to the state directory until real connections show
it on both nodes (x/a runs on the first node, x/b on the second; y/b and y/a reach
them across and within nodes):

- policy allow: a deny-all-ingress in x, then a policy allowing namespace y;
- policy deny: the allowing policy removed again;
- label allow: a policy allowing namespaces labelled ns2=updated, then y labelled;
- label deny: the label removed.

"Allow" is seen as soon as both connections succeed; "deny" as soon as both fail
(each attempt times out after 50 ms, which bounds that measurement's resolution).
It also reports when the collectors said they enforce the revision. Goal: < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from collector.sources.lab import read_status
from sensilla.lab.probe import probe
from tests.collector.policy.lab_support import PolicyLab, policy_lab

NP = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
DENY = {
    **NP,
    "metadata": {"name": "deny", "namespace": "x"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []},
}
ALLOW_Y = {
    **NP,
    "metadata": {"name": "allow-y", "namespace": "x"},
    "spec": {
        "podSelector": {},
        "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}
        ],
    },
}
ALLOW_LABEL = {
    **NP,
    "metadata": {"name": "allow-ns2", "namespace": "x"},
    "spec": {
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}],
    },
}
PAIRS = (("y/b", "x/a"), ("y/a", "x/b"))


def _connected(plab: PolicyLab) -> tuple[bool, ...]:
    lay = plab.layout
    pairs = [(lay.pod(s), lay.pod(d)) for s, d in PAIRS]
    res = probe(lay, pairs, 80, "TCP", 4, timeout=0.05)
    got = {(r.source, r.destination): r.connected for r in res}
    return tuple(got[p] for p in PAIRS)


def _collectors_at(plab: PolicyLab, revision: int) -> bool:
    return all(
        (read_status(plab.state_dir, n.name) or {}).get("revision", -1) >= revision
        for n in plab.layout.nodes
    )


def measure(
    plab: PolicyLab, change: Callable[[], int], want: bool, limit: float = 5.0
) -> tuple[float, float]:
    """Seconds until both pairs show `want`, and until both collectors reported."""
    t0 = time.perf_counter()
    revision = change()
    reported = effect = None
    while time.perf_counter() - t0 < limit:
        now = time.perf_counter()
        if reported is None and _collectors_at(plab, revision):
            reported = now - t0
        if effect is None and all(c == want for c in _connected(plab)):
            effect = time.perf_counter() - t0
        if effect is not None and reported is not None:
            return effect, reported
    raise RuntimeError(f"no effect within {limit} s (revision {revision})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float]]] = {}
    with policy_lab("spob") as plab:
        st = plab.lab.state
        plab.apply([DENY])
        assert _connected(plab) == (False, False)
        for _ in range(args.rounds):
            results.setdefault("policy allow", []).append(
                measure(plab, lambda: st.put("networkpolicies", ALLOW_Y), True)
            )
            results.setdefault("policy deny", []).append(
                measure(plab, lambda: st.delete("networkpolicies", "x/allow-y"), False)
            )
        plab.apply([ALLOW_LABEL])
        for _ in range(args.rounds):
            results.setdefault("label allow", []).append(
                measure(plab, lambda: st.label("namespaces", "y", ["ns2=updated"]), True)
            )
            results.setdefault("label deny", []).append(
                measure(plab, lambda: st.label("namespaces", "y", ["ns2-"]), False)
            )
    print(
        f"{'change':<14}{'effect median':>15}{'p90':>9}{'max':>9}"
        "   collectors reported (median/max)"
    )
    worst = 0.0
    for name, rows in results.items():
        eff = sorted(r[0] for r in rows)
        rep = sorted(r[1] for r in rows)
        p90 = eff[min(len(eff) - 1, int(0.9 * len(eff)))]
        worst = max(worst, eff[-1])
        print(
            f"{name:<14}{statistics.median(eff) * 1000:>12.0f} ms{p90 * 1000:>6.0f} ms"
            f"{eff[-1] * 1000:>6.0f} ms   "
            f"{statistics.median(rep) * 1000:.0f} / {rep[-1] * 1000:.0f} ms"
        )
    print(
        f"worst case {worst * 1000:.0f} ms over {args.rounds} rounds each "
        f"({'within' if worst < 1.0 else 'OVER'} the 1 s goal)"
    )
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
