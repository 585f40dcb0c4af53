"""The optimum is an upper bound: adversarial plug-ins through the real replay never beat it.

Each policy runs through ``run_backtest`` (the sequencer and the site model, as in
``wattshift backtest``); its margin within limits (what the report compares) must not exceed the
LP's margin nor the MIP's dual bound. The first case is the one that beat the old optimum by 12x:
a firm job left pending while power costs more than it earns.
"""

from __future__ import annotations

import numpy as np
import pytest
from backtest_factories import gpu_node, site, trace

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import BacktestSite
from wattshift.daemon.backtest.trace import Trace
from wattshift.daemon.cli.backtest import build_report
from wattshift.policies.base import Policy
from wattshift.policies.catalog import build_policy, make_policy

PLUGINS = ["adversarial_policies"]


def plugin(ref: str, **options: object) -> Policy:
    policy = build_policy(f"adversarial_policies:{ref}", options, PLUGINS)
    assert isinstance(policy, Policy)
    return policy


def assert_bounded(where: BacktestSite, rows: Trace, policy: Policy) -> tuple[float, float, float]:
    result = run_backtest(where, policy, rows)
    lp = solve_optimum(where, rows)
    mip = solve_optimum(where, rows, integer=True)
    margin = result.margin_within_limits_usd
    unmet = lp.shortfall.at if lp.shortfall else frozenset()
    if {v.split(": ", 1)[0] for v in result.violations} - unmet:
        # It broke a limit the optimum keeps: the report refuses to compare (no ratio at all).
        for optimum in (lp, mip):
            report = build_report(result, optimum)
            assert report["ratio_to_optimum"] is None and "not comparable" in report["ratio_undefined"]
        return margin, lp.bound_usd, mip.bound_usd
    assert margin <= lp.bound_usd + 1e-6, (policy.name, margin, lp.bound_usd)
    assert margin <= mip.bound_usd + 1e-6, (policy.name, margin, mip.bound_usd)
    assert mip.margin_usd <= lp.bound_usd + 1e-6  # the MIP is a restriction of the LP
    for optimum in (lp, mip):
        r = build_report(result, optimum)["ratio_to_optimum"]
        assert r is None or r <= 1.0
    return margin, lp.bound_usd, mip.bound_usd


FIRM_SITE = {"miners": [{"model": "Antminer S21", "count": 2}],
             "gpu_nodes": [gpu_node(tier="firm", count=2)]}


def firm_rows() -> Trace:
    # Two GPU nodes of firm work, arriving as power turns dear: for two hours power ($3,000/MWh)
    # costs more than the work earns ($16 an hour on 7.2 kW: $2,222/MWh). The old optimum ran firm
    # work whenever it had any, and this policy made 122% of it.
    prices = [30, 30, 3000, 3000, 3000, 3000, 3000, 3000, 30, 25, 20, 40]
    demand = [0, 0] + [2] * 10
    return trace([{"power": p, "gpu_rate": 2.0, "gpu_demand": d} for p, d in zip(prices, demand, strict=True)],
                 minutes=20)


def test_a_firm_job_left_waiting_through_dear_power_does_not_beat_the_optimum() -> None:
    margin, lp, _ = assert_bounded(site(**FIRM_SITE), firm_rows(), plugin("WaitingFirm"))
    assert 0 < margin < 0.6 * lp  # it made money: the bound is not met by everyone losing


def test_random_policies_never_beat_the_optimum() -> None:
    where = site(budget_kw=14, circuits=[{"name": "pdu", "limit_kw": 8}],
                 miners=[{"model": "Antminer S21", "count": 2, "circuit": "pdu"},
                         {"model": "Whatsminer M50S", "count": 1}],
                 gpu_nodes=[gpu_node(restart_seconds=300, checkpoint_seconds=60, penalty_usd=2)])
    prices = [35, 20, -10, 400, 3000, 60, 45, 250, 30, 15, 80, 500]
    budgets = ["", "", "", "9", "6", "", "", "", "10", "", "", ""]
    rows = trace([{"power": p, "budget_kw": b, "gpu_rate": 2.2, "gpu_demand": d}
                  for p, b, d in zip(prices, budgets, [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0], strict=True)],
                 minutes=5)
    for seed in range(6):
        assert_bounded(where, rows, plugin("Random", seed=seed, on_share=0.4 + 0.1 * seed))
    assert_bounded(where, rows, plugin("WaitingFirm"))


@pytest.mark.parametrize("seed", [11, 12])
def test_random_policies_on_firm_work_and_a_cut_below_it(seed: int) -> None:
    # The cut (4 kW) is below the firm nodes' draw: a policy that started them is over the limit
    # there (it may have bought margin that way: no ratio), one that did not must not beat it.
    rows = trace([{"power": p, "budget_kw": b, "gpu_rate": 2.0, "gpu_demand": 2}
                  for p, b in zip([30, 30, 40, 40, 30, 30], ["", "", "4", "4", "", ""], strict=True)], minutes=10)
    assert_bounded(site(**FIRM_SITE), rows, plugin("Random", seed=seed, on_share=0.7))


@pytest.mark.parametrize("switching", [False, True])
def test_windows_sum_to_a_bound_at_least_the_whole(switching: bool) -> None:
    # Windows cut every coupling between steps (starts, boots, min down, firm work that must not
    # stop); the cut only frees the program, so the windows' sum is at least the whole optimum,
    # however small the windows, and still bounds the policies.
    where = site(miners=[{"model": "Antminer S21", "count": 3}],
                 gpu_nodes=[gpu_node(tier="firm", restart_seconds=600), gpu_node(restart_seconds=900, penalty_usd=3)])
    prices = [30, 2500, 2500, 40, 30, 3000, 35, 30, 20, 900, 900, 30, 25, 30, 3000, 40]
    rows = trace([{"hashprice": 120, "power": p, "gpu_rate": 2.0, "gpu_demand": 1 + i % 2,
                   "budget_kw": "9" if i in (6, 7) else ""} for i, p in enumerate(prices)], minutes=5)
    whole = solve_optimum(where, rows, switching=switching)
    for hours, overlap in ((1 / 12, 0.0), (0.25, 0.0), (0.5, 0.25), (1.0, 0.5)):
        part = solve_optimum(where, rows, switching=switching, window_hours=hours, overlap_hours=overlap)
        assert part.windows == int(np.ceil(16 / (hours * 12)))
        assert part.bound_usd >= whole.bound_usd - 1e-6 * abs(whole.bound_usd)
        assert len(part.miner_watts) == len(rows.rows)
    single = solve_optimum(where, rows, switching=switching, window_hours=1 / 12, overlap_hours=0.0)
    assert single.bound_usd > whole.bound_usd + 0.01  # one-step windows forget the costs of switching
    result = run_backtest(where, plugin("WaitingFirm"), rows)
    assert result.margin_within_limits_usd <= single.bound_usd


def test_a_policy_that_follows_every_price_swing_does_not_beat_the_optimum() -> None:
    # The merit order wakes and sleeps the miners with a price that flips every five minutes. The
    # optimum must charge switching exactly as the site model does: charged boots and wear the
    # site model does not charge, it would fall below this run (SITE_MODEL_SWITCHING guards that).
    where = site(miners=[{"model": "Antminer S21", "count": 2}])
    rows = trace([{"hashprice": 300, "power": p} for p in [30, 1500] * 6], minutes=5)
    assert_bounded(where, rows, make_policy("merit-order", {}))
