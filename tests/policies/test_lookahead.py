"""lookahead: plans over the forecast with the site program, and acts on the plan's first step.

The cases are the ones merit-order cannot tell apart, because it sees only the price now: a
real-time spike the day-ahead price says is short, an afternoon the day-ahead price says is long,
a cut announced for a few minutes from now. And the rules it must keep whatever it plans: every
target fits every circuit, a stale price or a late solver hands the decision to merit-order.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from factories import miner, snapshot
from gpu_factories import H100_FULL_NODE_WATTS as NODE_FULL
from gpu_factories import gpu_node, job

from wattshift.model.forecast import ForecastStep
from wattshift.model.jobs import FlexTier
from wattshift.model.limits import LimitTree
from wattshift.model.specs import MinerSwitching
from wattshift.policies.base import Carried
from wattshift.policies.lookahead import LookaheadOptions, LookaheadPolicy
from wattshift.policies.merit_order import MeritOrderOptions, MeritOrderPolicy

SWITCHING = MinerSwitching(boot_seconds=300, boot_watts=350, wear_usd_per_cycle=0.25, min_up_seconds=900,
                           min_down_seconds=900)
# A node worth $8/h at full caps; at its lowest caps $5.27/h for the 1.96 kW it adds over idle
# (~$2,700/MWh); a suspension loses 30 minutes of work ($4).
TRAINING = job(usd_per_gpu_hour=1.0, restart_seconds=1800)


def forecast(budget: float, prices: dict[int, float] | None = None, *, hours: float = 12,
             cut: tuple[float, float, float] | None = None) -> tuple[ForecastStep, ...]:
    """Five-minute steps; ``prices``: step -> published price; ``cut``: (from s, to s, budget)."""
    steps = []
    for k in range(int(hours * 12)):
        start = k * 300.0
        b = cut[2] if cut and cut[0] <= start < cut[1] else budget
        steps.append(ForecastStep(start, 300.0, b, (prices or {}).get(k)))
    return tuple(steps)


def day_ahead(low: float, *, high: float | None = None, high_steps: range = range(0)) -> dict[int, float]:
    return {k: (high if high is not None and k in high_steps else low) for k in range(1, 144)}


def test_a_spike_the_day_ahead_price_says_is_short_is_ridden_out():
    # $5,000/MWh now (the market cap), $40 published for every step after. The plan trusts the
    # price now for the next minutes (persistence, fading over an hour into the published price):
    # keeping the job at its lowest caps through that costs ~$1.5, suspending it $4 of lost work.
    # merit-order, seeing only the price now, suspends it.
    site = dataclasses.replace(
        snapshot([], gpu_nodes=[gpu_node("gpu-1", job=TRAINING)], budget=20_000, power=5000),
        forecast=forecast(20_000, day_ahead(40.0)))
    planned = LookaheadPolicy().decide(site)
    assert planned["gpu-1"].watts > 0, planned["gpu-1"].reason
    myopic = MeritOrderPolicy(MeritOrderOptions(min_dwell_seconds=0)).decide(site)
    assert myopic["gpu-1"].watts == 0


def test_an_afternoon_the_day_ahead_price_says_is_long_suspends_the_job_now():
    site = dataclasses.replace(
        snapshot([], gpu_nodes=[gpu_node("gpu-1", job=TRAINING)], budget=20_000, power=5000),
        forecast=forecast(20_000, day_ahead(40.0, high=5000.0, high_steps=range(1, 36))))
    planned = LookaheadPolicy().decide(site)
    assert planned["gpu-1"].watts == 0, planned["gpu-1"].reason


def test_a_cut_announced_for_ten_minutes_from_now_starts_no_miner():
    # Cheap power, four miners asleep. A start costs wear and five minutes of boot; the cut to
    # nothing in ten minutes would leave a woken miner five minutes of hashing, and then hold it
    # down for three hours. merit-order, which sees the budget of now only, wakes all four.
    sleeping = [miner(m, watts=12, limit=3500, mining=False, switching=SWITCHING, state_since=0.0) for m in "abcd"]
    site = dataclasses.replace(snapshot(sleeping, budget=20_000, power=30),
                               forecast=forecast(20_000, cut=(600.0, 11_400.0, 100.0)))
    planned = LookaheadPolicy().decide(site)
    assert [planned[m].watts for m in "abcd"] == [0, 0, 0, 0]
    myopic = MeritOrderPolicy(MeritOrderOptions(min_dwell_seconds=0)).decide(site)
    assert all(myopic[m].watts > 0 for m in "abcd")
    # With no cut announced, the same site wakes them.
    calm = dataclasses.replace(site, forecast=forecast(20_000))
    assert all(LookaheadPolicy().decide(calm)[m].watts > 0 for m in "abcd")


@pytest.mark.parametrize("seed", range(4))
def test_every_target_fits_every_circuit_whatever_the_plan_rounds(seed):
    import random

    rng = random.Random(seed)
    circuits = {"row-1": (rng.uniform(5_000, 12_000), "site"), "row-2": (rng.uniform(5_000, 12_000), "site")}
    miners = [miner(f"m{i}", circuit=rng.choice(list(circuits)), watts=rng.choice([12, 3500]),
                    mining=None, switching=SWITCHING) for i in range(9)]
    nodes = [gpu_node("gpu-1", circuit="row-1", job=TRAINING)]
    budget = rng.uniform(8_000, 20_000)
    site = dataclasses.replace(
        snapshot(miners, budget=budget, circuits=circuits, power=rng.uniform(20, 60), gpu_nodes=nodes),
        forecast=forecast(budget, day_ahead(rng.uniform(20, 80))))
    allocation = LookaheadPolicy().decide(site)
    assert {t.device_id for t in allocation} == {d.device_id for d in site.loads}
    tree = LimitTree(site.effective_limits(), site.circuit_parents)
    draws = tree.loads((site.load(t.device_id).circuit, t.watts or site.load(t.device_id).idle_watts)
                       for t in allocation)
    assert tree.violations(draws, tolerance=1.0) == []


def test_a_stale_price_hands_the_decision_to_merit_order():
    site = snapshot([miner("a")], budget=10_000, stale=True)
    allocation = LookaheadPolicy().decide(site)
    assert allocation.summary.startswith("lookahead: the power price is stale; merit-order decides")
    assert allocation.targets == MeritOrderPolicy().decide(site).targets


def test_a_late_solver_hands_the_decision_to_merit_order_and_is_not_asked_again_at_once():
    site = dataclasses.replace(
        snapshot([miner(m) for m in "abc"], gpu_nodes=[gpu_node("gpu-1", job=TRAINING)], budget=12_000),
        forecast=forecast(12_000, day_ahead(40.0)))
    policy = LookaheadPolicy(LookaheadOptions(time_budget_seconds=1e-9, horizon_hours=72, step_seconds=60,
                                              near_hours=72))
    first = policy.decide(site)
    assert first.summary.startswith("lookahead: no plan (HiGHS did not find the optimum: Time limit reached)")
    assert first.targets == MeritOrderPolicy().decide(site).targets
    later = policy.decide(dataclasses.replace(site, clock=site.clock + 300), first.state)
    assert later.summary.startswith("lookahead: the solver was late at the last plan")


def test_the_plan_is_followed_between_replans_and_an_unannounced_cut_is_met_at_once():
    site = dataclasses.replace(snapshot([miner(m) for m in "abcd"], budget=16_000, power=30),
                               forecast=forecast(16_000))
    carried = Carried(LookaheadPolicy())
    carried.decide(site)
    state = json.loads(json.dumps(carried.state))  # what a stateful policy keeps must survive JSON
    policy = LookaheadPolicy()
    later = dataclasses.replace(site, clock=site.clock + 300)
    followed = policy.decide(later, state)
    assert "made 300 s ago" in followed.summary
    # A cut no event announced: met at once by merit-order's shedding order, no solver on the way...
    cut = dataclasses.replace(later, budget_watts=7_500)
    met = policy.decide(cut, state)
    assert met.summary.startswith("lookahead: the budget fell below the plan's (an unannounced cut)")
    assert met.targets == MeritOrderPolicy().decide(cut).targets
    assert sum(t.watts for t in met) <= 7_500
    # ... and the next decision plans from the site the cut left, taking the cut to last: the one
    # after follows that plan (no merit-order and plan by turns through a cut no event announced).
    replanned = policy.decide(dataclasses.replace(cut, clock=cut.clock + 10), met.state)
    assert "made 0 s ago" in replanned.summary
    assert sum(t.watts for t in replanned) <= 7_500
    through = policy.decide(dataclasses.replace(cut, clock=cut.clock + 310), replanned.state)
    assert "made 300 s ago" in through.summary
    # A fall within 2 % of the plan's budget (a meter's overhead moving) follows the plan too.
    wobble = policy.decide(dataclasses.replace(later, budget_watts=16_000 * 0.99), state)
    assert "made 300 s ago" in wobble.summary


def test_firm_work_running_is_left_as_it_is():
    firm = gpu_node("rented", job=job(tier=FlexTier.FIRM))
    site = dataclasses.replace(snapshot([miner("a")], gpu_nodes=[firm], budget=9_000, power=3000),
                               forecast=forecast(9_000))
    allocation = LookaheadPolicy().decide(site)
    assert allocation["rented"].watts == NODE_FULL
    assert "never curtailed" in allocation["rented"].reason


@pytest.mark.parametrize(("options", "message"), [
    ({"horizon_hours": 0}, "lookahead option horizon_hours: Input should be greater than or equal to 0.5"),
    ({"time_budget_seconds": "soon"}, "lookahead option time_budget_seconds: Input should be a valid number"),
    ({"fallback": {"step_watts": 1}}, "lookahead option fallback.step_watts"),
    ({"horizon": 12}, "lookahead option horizon: Extra inputs are not permitted"),
])
def test_bad_options_are_refused_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        LookaheadPolicy.from_options(options)


def test_it_asks_the_loop_for_as_much_forecast_as_its_horizon():
    assert LookaheadPolicy(LookaheadOptions(horizon_hours=6)).forecast_seconds == 6 * 3600

