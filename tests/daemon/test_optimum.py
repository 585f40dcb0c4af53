"""The hindsight optimum on cases small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from backtest_factories import gpu_node, site, trace

from wattshift.daemon.backtest.optimum import MIP_REL_GAP, solve_optimum
from wattshift.daemon.backtest.site import spec_for
from wattshift.model.specs import SPECS
from wattshift.planning.envelope import TOLERANCE, PowerLaw, overshoot, tangents

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
    result = solve_optimum(site(), trace([{"power": 20}, {"power": 500}]), integer=integer, switching=False)
    expected = (s21_usd_per_hour(4000) - 20 * 4.0 / 1000) + (-500 * 12 / 1e6)
    assert result.margin_usd == pytest.approx(expected, rel=1e-9)
    assert result.miner_watts == pytest.approx((4000, 12))


def test_a_budget_cut_holds_the_miner_at_the_budget() -> None:
    result = solve_optimum(site(), trace([{"power": 20, "budget_kw": 2.5}, {"power": 20}]), switching=False)
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


def test_a_budget_below_the_idle_draw_is_a_shortfall_where_nothing_is_earned() -> None:
    # 1 kW is below the node's idle draw (1.36 kW): no policy meets it. The optimum still solves,
    # names the shortfall, and earns nothing in that step (the other step runs as usual).
    rows = [{"power": 20, "budget_kw": 1.0}, {"power": 20}]
    result = solve_optimum(site(gpu_nodes=[gpu_node()]), trace(rows), switching=False)  # free starts: exact sums
    assert result.shortfall is not None
    assert result.shortfall.steps == 1 and result.shortfall.circuit == "site"
    assert result.shortfall.worst_kw == pytest.approx((12 + NODE_IDLE_W) / 1000 - 1.0)
    assert "the limit cannot be met at 1 step(s)" in result.shortfall.describe()
    assert result.miner_watts[0] == pytest.approx(12)  # earning nothing there, it sleeps
    assert result.margin_usd == pytest.approx(
        -20 * (12 + NODE_IDLE_W) / 1e6 + s21_usd_per_hour(4000) - 20 * (4000 + NODE_IDLE_W) / 1e6, rel=1e-9)


@pytest.mark.parametrize("integer", [False, True])
def test_a_pending_firm_job_waits_while_power_costs_more_than_it_earns(integer: bool) -> None:
    # At $10,000/MWh even the lowest caps (3.1 kW, $31 an hour, $17.40 more than idle) cost more
    # than the job earns there ($10.55): waiting is better, and the sequencer lets a pending firm
    # job wait. (The old optimum forced it to run at full caps.)
    firm = site(miners=[], gpu_nodes=[gpu_node(tier="firm")])
    rows = [{"power": 10_000, "gpu_rate": 2.0, "gpu_demand": 1}] * 2
    result = solve_optimum(firm, trace(rows), integer=integer)
    assert result.ai_usd == pytest.approx(0.0, abs=1e-9)
    assert result.margin_usd == pytest.approx(-2 * 10_000 * NODE_IDLE_W / 1e6, rel=1e-9)


def test_running_firm_work_is_never_stopped_for_a_spike() -> None:
    # Cheap, a $20,000 spike, cheap. A suspendable job suspends for the spike; firm work that runs
    # cannot (the sequencer never sheds it): it waits until the spike has passed or runs through.
    rows = [{"power": p, "gpu_rate": 2.0, "gpu_demand": 1} for p in (30, 20_000, 30)]
    full = (node_usd_per_hour(2.0, 700) - 30 * NODE_FULL_W / 1e6) / 12
    free = solve_optimum(site(miners=[], gpu_nodes=[gpu_node()]), trace(rows, minutes=5))
    assert free.margin_usd == pytest.approx(2 * full - 20_000 * NODE_IDLE_W / 1e6 / 12, rel=1e-9)
    firm = solve_optimum(site(miners=[], gpu_nodes=[gpu_node(tier="firm")]), trace(rows, minutes=5))
    through = 2 * full + (node_usd_per_hour(2.0, 200) - 20_000 * NODE_MIN_W / 1e6) / 12
    wait = -30 * NODE_IDLE_W / 1e6 / 12 - 20_000 * NODE_IDLE_W / 1e6 / 12 + full
    assert firm.margin_usd == pytest.approx(max(through, wait), rel=1e-9)


def test_the_mip_states_its_gap_and_its_bound() -> None:
    rows = [{"power": p} for p in (20, 60, 90, 20)]
    result = solve_optimum(site(miners=[{"model": "Antminer S21", "count": 3}], budget_kw=7), trace(rows),
                           integer=True)
    summary = result.summary()
    assert summary["mip_rel_gap_target"] == MIP_REL_GAP
    assert result.mip_gap is not None and 0 <= result.mip_gap <= MIP_REL_GAP
    assert result.margin_usd <= result.bound_usd <= result.margin_usd * (1 + MIP_REL_GAP) + 1e-9
    lp = solve_optimum(site(miners=[{"model": "Antminer S21", "count": 3}], budget_kw=7), trace(rows))
    assert result.bound_usd <= lp.bound_usd + 1e-9  # integer on-counts only tighten


def miner_curve(model: str) -> PowerLaw:
    c = spec_for(model).curve
    return PowerLaw(c.nominal_ths / c.nominal_watts ** (1 / c.exponent), 0.0, 1 / c.exponent)


CURVES = [(s.model, miner_curve(s.model), s.min_watts, s.max_watts) for s in SPECS.values()
          if s.model not in ("Whatsminer M30S+", "Antminer S19 Pro")]  # the two with no policy curve


@pytest.mark.parametrize(("name", "curve", "lo", "hi"), [
    *CURVES,
    ("8x H100 node", PowerLaw((1 / (8 * 700)) ** (1 / 3), 1600.0, 1 / 3), 1600 + 8 * 200, 1600 + 8 * 700),
    ("1x GPU node, wide caps", PowerLaw((1 / 700) ** (1 / 3), 300.0, 1 / 3), 300 + 100, 300 + 700),
])
def test_the_tangent_envelope_overshoots_by_at_most_its_stated_tolerance(
    name: str, curve: PowerLaw, lo: float, hi: float,
) -> None:
    lines = tangents(curve, lo, hi)
    worst = overshoot(curve, lines, lo, hi)
    assert 0.0 <= worst <= TOLERANCE  # never below the curve (a bound), never more than 0.05% above
    if name == "8x H100 node":  # ten evenly spaced tangents, as before: above the 0.1% once claimed
        even = [(curve(x) - curve.slope(x) * x, curve.slope(x)) for x in np.linspace(lo, hi, 10)]
        assert overshoot(curve, even, lo, hi) == pytest.approx(0.00167, abs=2e-5)
