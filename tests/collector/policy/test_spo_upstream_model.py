"""Every upstream NetworkPolicy e2e scenario (TCP, UDP and SCTP contexts) against the
pure model: all 81 cells of every probe, in both address families."""

from __future__ import annotations

import pytest

from tests.collector.policy.scenario_data import (
    ModelRunner,
    Scenario,
    diff_cells,
    expected_table,
    load_scenarios,
    render_table,
    run_steps,
)

SCENARIOS = load_scenarios()


def test_spo_scenario_inventory() -> None:
    by_context: dict[str, int] = {}
    for s in SCENARIOS:
        by_context[s.context] = by_context.get(s.context, 0) + 1
    # The upstream suite: 42 TCP, 3 UDP, 3 SCTP scenarios.
    assert by_context == {"tcp": 42, "udp": 3, "sctp": 3}
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)
    assert len({(s.context, s.upstream) for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.unit
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_spo_upstream_scenario_model(scenario: Scenario, family: int) -> None:
    runner = ModelRunner(family=family)
    probes = 0
    for index, probe in run_steps(scenario, runner):
        expected = expected_table(probe["expect"])
        observed = runner.table(probe["port"], probe["protocol"])
        problems = diff_cells(expected, observed, include_self=True)
        assert not problems, (
            f"{scenario.id} step {index} ({probe['protocol']}/{probe['port']}, IPv{family}):\n"
            + "\n".join(problems)
            + "\nexpected:\n"
            + render_table(expected)
            + "\nobserved:\n"
            + render_table(observed, expected)
        )
        probes += 1
    assert probes == scenario.probes > 0
