"""The hindsight optimum on cases small enough to work out by hand."""

from __future__ import annotations

import math

import pytest
from backtest_factories import gpu_node, site, trace

from wattshift.daemon.backtest.optimum import OptimumError, solve_optimum

HASHPRICE = 45.0


def s21_usd_per_hour(watts: float) -> float:
    """An S21 (200 TH/s at 3500 W, exponent 2) at ``watts``, at $45/PH/day."""
    return HASHPRICE / 24 / 1000 * 200 * math.sqrt(watts / 3500)


def node_usd_per_hour(rate: float, cap: float) -> float:
    return rate * 8 * (cap / 700) ** (1 / 3)


NODE_IDLE_W = 800 + 8 * 70
NODE_FULL_W = 1500 + 8 * 700  # host_max_kw 1.5 (the default)
NODE_MIN_W = 1500 + 8 * 200


@pytest.mark.parametrize("integer", [False, True])
def test_one_miner_two_steps_runs_flat_out_when_cheap_and_sleeps_when_dear(integer: bool) -> None:
    # $20/MWh is below even the last watt's value at 4000 W; $500 is above the first watt's.
    result = solve_optimum(site(), trace([{"power": 20}, {"power": 500}]), integer=integer)
    expected = (s21_usd_per_hour(4000) - 20 * 4.0 / 1000) + (-500 * 12 / 1e6)
    assert result.margin_usd == pytest.approx(expected, rel=1e-9)
    assert result.miner_watts == pytest.approx((4000, 12))


def test_a_budget_cut_holds_the_miner_at_the_budget() -> None:
    result = solve_optimum(site(), trace([{"power": 20, "budget_kw": 2.5}, {"power": 20}]))
    exact = s21_usd_per_hour(2500) - 20 * 2.5 / 1000 + s21_usd_per_hour(4000) - 20 * 4.0 / 1000
    assert result.miner_watts == pytest.approx((2500, 4000))
    # Tangent lines bound the curve from above: never below the truth, and within 0.1% of it.
    assert exact <= result.margin_usd <= exact * 1.001


def test_the_reserve_comes_off_the_budget_and_circuits_bind_too() -> None:
    tight = site(reserve_kw=0.5, circuits=[{"name": "pdu", "limit_kw": 3.0}],
                 miners=[{"model": "Antminer S21", "count": 1, "circuit": "pdu"}])
    result = solve_optimum(tight, trace([{"power": 20, "budget_kw": 3.3}, {"power": 20}]))
    assert result.miner_watts == pytest.approx((2800, 3000))


def test_a_restart_cost_larger_than_the_work_keeps_the_node_off() -> None:
    costly = site(miners=[], gpu_nodes=[gpu_node(restart_seconds=3600)])
    rows = [{"power": 30, "gpu_rate": 2.0, "gpu_demand": d} for d in (0, 1, 0)]
    result = solve_optimum(costly, trace(rows, minutes=5))
    # Starting would cost an hour of work ($16) for five minutes of it ($1.33): stay off.
    assert result.ai_usd == pytest.approx(0.0, abs=1e-9)
    assert result.margin_usd == pytest.approx(-30 * NODE_IDLE_W / 1e6 * 0.25, rel=1e-9)

    free = solve_optimum(site(miners=[], gpu_nodes=[gpu_node()]), trace(rows, minutes=5))
    expected = (node_usd_per_hour(2.0, 700) - 30 * NODE_FULL_W / 1e6) / 12 - 30 * NODE_IDLE_W / 1e6 * 2 / 12
    assert free.margin_usd == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("integer", [False, True])
def test_an_interruption_penalty_keeps_a_job_running_through_a_spike(integer: bool) -> None:
    # Five cheap steps around one at $20,000/MWh: waiting for the spike to pass before starting
    # would give up more than the spike costs, so the job runs from the first step.
    rows = [{"power": p, "gpu_rate": 2.0, "gpu_demand": 1} for p in (30, 30, 30, 30, 20_000, 30)]
    full = (node_usd_per_hour(2.0, 700) - 30 * NODE_FULL_W / 1e6) / 12
    # No penalty: suspending for the spike (idle draw) loses less than running at the lowest cap.
    free = solve_optimum(site(miners=[], gpu_nodes=[gpu_node()]), trace(rows, minutes=5), integer=integer)
    assert free.margin_usd == pytest.approx(5 * full - 20_000 * NODE_IDLE_W / 1e6 / 12, rel=1e-9)
    # A $100 penalty per interruption: running through it at the lowest cap is better.
    held = solve_optimum(site(miners=[], gpu_nodes=[gpu_node(penalty_usd=100)]), trace(rows, minutes=5),
                         integer=integer)
    spike = (node_usd_per_hour(2.0, 200) - 20_000 * NODE_MIN_W / 1e6) / 12
    assert held.margin_usd == pytest.approx(5 * full + spike, rel=1e-9)
    assert held.switching_usd == pytest.approx(0.0, abs=1e-9)


def test_a_budget_below_the_idle_draw_is_reported_not_solved() -> None:
    with pytest.raises(OptimumError, match="site's limit is below what its devices draw idle"):
        solve_optimum(site(gpu_nodes=[gpu_node()]), trace([{"power": 20, "budget_kw": 1.0}]))
