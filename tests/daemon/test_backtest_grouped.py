"""The grouped replay (identical miners in identical states modelled once) gives the ungrouped
replay's result: the same decisions, the same totals, the same violations."""

from __future__ import annotations

from dataclasses import fields

import pytest
from backtest_factories import gpu_node, site, trace

from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site_model import Totals
from wattshift.policies.catalog import make_policy


def mixed_site():
    return site(
        budget_kw=60, reserve_kw=1,
        circuits=[{"name": "pdu", "limit_kw": 25}],
        miners=[{"model": "Antminer S21", "count": 7, "circuit": "pdu"},
                {"model": "Antminer S19 XP", "count": 5, "switching": {"boot_seconds": 420, "min_down_seconds": 600}},
                {"model": "Whatsminer M60S", "count": 3}],
        gpu_nodes=[gpu_node(count=2, restart_seconds=300, checkpoint_seconds=60, penalty_usd=2)],
    )


ROWS = [{"power": p, "budget_kw": b, "gpu_rate": 2.0, "gpu_demand": d} for p, b, d in [
    (25, "", 1), (25, "", 2), (80, "", 2), (300, "", 2), (150, "", 1), (25, 30, 1), (25, 30, 0), (-5, "", 0),
    (40, "", 2), (40, "", 2), (140, "", 2), (60, 8, 2), (60, "", 2), (20, "", 1), (20, "", 1), (900, "", 1),
]]


@pytest.mark.parametrize("policy", ["merit-order", "strike-price"])
def test_the_grouped_replay_equals_the_ungrouped_one(policy: str) -> None:
    t = trace(ROWS * 3, minutes=5)
    grouped = run_backtest(mixed_site(), make_policy(policy, {}), t, grouped=True)
    each = run_backtest(mixed_site(), make_policy(policy, {}), t, grouped=False)
    assert grouped.totals.miner_starts > 15 and grouped.totals.miner_switches > grouped.totals.miner_starts
    for f in fields(Totals):
        a, b = getattr(grouped.totals, f.name), getattr(each.totals, f.name)
        assert a == (pytest.approx(b, rel=1e-12) if isinstance(a, float) else b), f.name
    assert grouped.violations == each.violations and grouped.decide_calls == each.decide_calls
    assert [w for r in grouped.records for w in (r.miner_watts, r.gpu_watts)] == pytest.approx(
        [w for r in each.records for w in (r.miner_watts, r.gpu_watts)], rel=1e-12)
