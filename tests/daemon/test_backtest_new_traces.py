"""The traces written for issue 15, each judging one thing a back-test under real switching
costs must tell apart (run with ``-s`` for the figures)."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

from wattshift.daemon.backtest.replay import BacktestResult, run_backtest
from wattshift.daemon.backtest.site import BacktestSite, load_backtest_site
from wattshift.daemon.backtest.trace import Trace, load_trace
from wattshift.model.snapshot import SiteSnapshot
from wattshift.model.specs import NO_MINER_SWITCHING
from wattshift.policies.base import Allocation
from wattshift.policies.catalog import make_policy

ROOT = Path(__file__).resolve().parents[2]


@cache
def site() -> BacktestSite:
    return load_backtest_site(ROOT / "deploy" / "backtest-site.yaml")


def trace(name: str, days: float | None = None) -> Trace:
    t = load_trace(ROOT / "simulators" / "traces" / name)
    if days is None:
        return t
    n = int(days * 86400 / t.step_seconds)
    return dataclasses.replace(t, rows=t.rows[:n], durations=t.durations[:n])


class SwitchingBlind:
    """merit-order as it was before issue 15: switching is free in its eyes (the site model and
    the sequencer still charge and hold as they do for any policy)."""

    name = "merit-order (switching-blind)"

    def __init__(self) -> None:
        self.inner = make_policy("merit-order", {})

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        blind = tuple(dataclasses.replace(m, switching=NO_MINER_SWITCHING) for m in snapshot.miners)
        return self.inner.decide(dataclasses.replace(snapshot, miners=blind))


def figures(result: BacktestResult) -> str:
    t = result.totals
    return (f"{result.policy}: margin ${t.margin_usd:,.2f}, {t.miner_switches} switches, {t.miner_starts} starts, "
            f"wear ${t.wear_usd:,.2f}, {t.min_up_breaks} min-up breaks, {t.refused_starts} refused")


def test_on_a_low_hashprice_month_paying_for_starts_switches_less_and_earns_more() -> None:
    t = trace("low_hashprice_month.csv", days=10)
    aware = run_backtest(site(), make_policy("merit-order", {}), t, keep_records=False)
    blind = run_backtest(site(), SwitchingBlind(), t, keep_records=False)
    print(f"\n{figures(aware)}\n{figures(blind)}")
    assert aware.violations == [] and blind.violations == []
    assert aware.totals.miner_starts < 0.8 * blind.totals.miner_starts
    assert aware.totals.wear_usd < blind.totals.wear_usd
    assert aware.totals.min_up_breaks < blind.totals.min_up_breaks
    assert aware.totals.margin_usd > blind.totals.margin_usd


def test_short_4cp_windows_force_early_stops_and_no_wake_inside_a_minimum_down_time() -> None:
    t = trace("four_cp_windows_week.csv")
    aware = run_backtest(site(), make_policy("merit-order", {}), t, keep_records=False)
    blind = run_backtest(site(), SwitchingBlind(), t, keep_records=False)
    print(f"\n{figures(aware)}\n{figures(blind)}")
    assert aware.violations == [] and blind.violations == []  # every cut obeyed, within min up or not
    assert aware.totals.min_up_breaks > 0  # a window starting soon after a start forces it
    assert aware.totals.min_up_breaks < blind.totals.min_up_breaks
    # The sequencer holds a wake inside a minimum down time, whatever the policy asks.
    assert aware.totals.refused_starts == 0 and blind.totals.refused_starts == 0


def test_negative_prices_keep_every_miner_running() -> None:
    t = trace("negative_prices_week.csv")
    result = run_backtest(site(), make_policy("merit-order", {}), t)
    negative = [r.miner_watts for r in result.records[12:] if r.power_usd_per_mwh < 0]
    print(f"\n{figures(result)}; {len(negative)} negative steps at {min(negative) / 1000:.1f} kW or more")
    assert result.violations == [] and len(negative) > 500
    assert min(negative) > 75_000  # what the circuits allow the 24 miners: ~80 kW
    assert result.totals.miner_starts == 24  # started once, cold, and never stopped by a negative price


def test_a_price_plateau_during_training_lowers_the_caps_and_a_short_spike_is_ridden_through() -> None:
    t = trace("gpu_plateau_training.csv")
    result = run_backtest(site(), make_policy("merit-order", {}), t)
    plateau = [r.gpu_watts for r in result.records if r.power_usd_per_mwh > 2500]
    calm = [r.gpu_watts for r in result.records if r.power_usd_per_mwh < 100]
    print(f"\n{figures(result)}; GPU {sum(plateau) / len(plateau) / 1000:.1f} kW in the plateau and spike, "
          f"{sum(calm) / len(calm) / 1000:.1f} kW otherwise; {result.totals.job_interruptions} interruptions")
    assert result.violations == [] and len(plateau) == 36 + 3
    assert max(plateau) < min(calm)
    assert result.totals.job_interruptions == 0
