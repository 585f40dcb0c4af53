"""lookahead in the back-test: the forecast the replay gives it, and what it makes of the traces.

The replay must give a planning policy only what a site would know: events announced within the
notice, the day-ahead price, never the real-time price of a step to come. On the shipped traces
with switching physics on, lookahead reaches 99 % of the hindsight optimum without a single
decision handed to merit-order (the full table: benchmarks/policies_vs_optimum.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backtest_factories import site, trace

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.replay import forecast_at, run_backtest
from wattshift.daemon.backtest.site import load_backtest_site
from wattshift.daemon.backtest.trace import load_trace
from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Allocation, carried, forecast_seconds
from wattshift.policies.catalog import make_policy

ROOT = Path(__file__).resolve().parents[2]


def test_the_forecast_holds_announced_events_and_day_ahead_prices_and_no_real_time_price():
    t = trace([{"power": 30, "day_ahead": 31}, {"power": 900, "day_ahead": 35}, {"power": 40, "budget_kw": 20},
               {"power": 50, "day_ahead": 60, "budget_kw": 10}, {"power": 45}], minutes=60)
    s = site(reserve_kw=2)
    steps = forecast_at(s, t, 0, 0.0, seconds=4 * 3600, notice_seconds=2 * 3600)
    assert [f.offset_seconds for f in steps] == [0, 3600, 7200, 10800]  # 4 h asked, the fifth row beyond
    assert [f.power_usd_per_mwh for f in steps] == [None, 35, None, 60]  # day-ahead only, never 900
    # The 20 kW event 2 h ahead is announced (and met from the step before it, as the loop plans
    # for the lower of a step's budget and the next's); the 10 kW one 3 h ahead is not yet.
    assert [f.budget_watts for f in steps] == [98_000, 18_000, 18_000, 98_000]
    later = forecast_at(s, t, 1, 1800.0, seconds=3 * 3600, notice_seconds=2 * 3600)
    assert [f.budget_watts for f in later] == [18_000, 8_000, 8_000, 98_000]  # now the 10 kW one is
    assert later[0].seconds == 1800  # what is left of the step


def test_a_policy_that_asks_for_no_forecast_gets_none():
    seen: list[SiteSnapshot] = []
    policy = make_policy("merit-order", {})

    class Spy:
        name = "spy"

        def decide(self, snapshot: SiteSnapshot) -> Allocation:
            seen.append(snapshot)
            return policy.decide(snapshot)

    run_backtest(site(), Spy(), trace([{"power": 30, "day_ahead": 31}] * 3))
    assert seen and all(s.forecast == () for s in seen)


class _Counting:
    def __init__(self, name: str) -> None:
        self.policy = carried(make_policy(name, {}))
        self.name = name
        self.fallbacks = 0
        self.forecast_seconds = forecast_seconds(self.policy)

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        allocation = self.policy.decide(snapshot)
        self.fallbacks += "merit-order decides" in allocation.summary
        return allocation


@pytest.mark.parametrize("name", ["gpu_plateau_training", "power_spike_day"])
def test_lookahead_reaches_99_percent_of_the_optimum_on_its_own_plans(name):
    backtest_site = load_backtest_site(ROOT / "deploy" / "backtest-site.yaml")
    shipped = load_trace(ROOT / "simulators" / "traces" / f"{name}.csv")
    bound = solve_optimum(backtest_site, shipped).bound_usd  # a HiGHS run first, as the CLI's order is not
    lookahead = _Counting("lookahead")
    planned = run_backtest(backtest_site, lookahead, shipped, keep_records=False)
    merit = run_backtest(backtest_site, carried(make_policy("merit-order", {})), shipped, keep_records=False)
    assert planned.violations == []
    assert lookahead.fallbacks == 0  # every decision from a plan: the ratio is lookahead's own
    assert planned.margin_within_limits_usd >= 0.99 * bound
    assert planned.margin_within_limits_usd <= bound + 1e-6
    if name == "gpu_plateau_training":  # the plateau is where foresight pays
        assert planned.margin_within_limits_usd > merit.margin_within_limits_usd
