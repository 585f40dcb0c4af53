"""strike-price on sequences whose right answer is known: debounce, hysteresis, limits."""

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import S19XP, miner, snapshot
from gpu_factories import H100_FULL_NODE_WATTS, gpu_node, job, with_gpus

from wattshift.model.jobs import FlexTier
from wattshift.policies.base import Carried
from wattshift.policies.catalog import make_policy
from wattshift.policies.strike_price import (
    StrikePriceOptions,
    StrikePricePolicy,
    StrikeState,
    advance,
)

T0 = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
POLICY = StrikePricePolicy(StrikePriceOptions(
    strike_usd_per_mwh=100, hysteresis_usd_per_mwh=5, curtail_after_minutes=10,
    restore_after_minutes=15, min_dwell_seconds=0,
))


def at(minutes: float, power: float | None, miners=None, *, stale: bool = False, budget: float = 20_000):
    site = snapshot(miners or [miner("a"), miner("b")], budget=budget, power=power, stale=stale)
    return dataclasses.replace(site, at=T0 + timedelta(minutes=minutes))


def replay(prices: list[tuple[float, float]], policy=POLICY):
    """Thread the state through a sequence of (minute, price), as a back-test does."""
    state, out = None, []
    for minute, price in prices:
        allocation = policy.decide(at(minute, price), state)
        state = allocation.state
        out.append(allocation)
    return out


def mining(allocation) -> bool:
    return all(t.watts > 0 for t in allocation if t.device_id in "ab")


def test_cheap_power_runs_every_miner_at_its_maximum():
    allocation = POLICY.decide(at(0, 40))
    assert [allocation[d].watts for d in "ab"] == [4000, 4000]
    assert "(max)" in allocation["a"].reason and "power $40/MWh below strike" in allocation["a"].reason


def test_the_price_must_stay_above_strike_plus_hysteresis_for_the_debounce_window():
    out = replay([(0, 120), (5, 120), (9.9, 120), (10, 120)])
    assert [mining(a) for a in out] == [True, True, True, False]
    assert "for 5 of 10 min (debounce)" in out[1]["a"].reason
    assert out[3]["a"].watts == 0 and "curtailed" in out[3]["a"].reason


def test_a_dip_into_the_band_restarts_the_debounce():
    out = replay([(0, 120), (9, 120), (9.5, 100), (10, 120), (19, 120), (20, 120)])
    assert [mining(a) for a in out] == [True, True, True, True, True, False]


def test_inside_the_hysteresis_band_nothing_ever_switches():
    # 104 is above the strike but not above strike + hysteresis: an hour of it changes nothing.
    assert all(mining(a) for a in replay([(m, 104) for m in range(0, 61, 5)]))
    # And once curtailed, 96 (below the strike, not below strike - hysteresis) keeps it so.
    out = replay([(0, 200), (10, 200)] + [(m, 96) for m in range(15, 120, 15)])
    assert [mining(a) for a in out] == [True] + [False] * (len(out) - 1)


def test_restore_waits_for_the_price_to_stay_below_strike_minus_hysteresis():
    out = replay([(0, 200), (10, 200), (11, 90), (20, 90), (25.9, 90), (26, 90)])
    assert [mining(a) for a in out] == [True, False, False, False, False, True]
    assert "below strike $100±5/MWh for 9 of 15 min (debounce)" in out[3]["a"].reason


def test_zero_debounce_switches_at_the_first_price_beyond_the_line():
    policy = StrikePricePolicy(StrikePriceOptions(strike_usd_per_mwh=100, curtail_after_minutes=0,
                                                  restore_after_minutes=0, min_dwell_seconds=0))
    assert [mining(a) for a in replay([(0, 106), (1, 94)], policy)] == [False, True]


def test_a_stale_price_never_switches_and_restarts_the_debounce():
    high_then_stale = POLICY.decide(at(0, 200))
    stale = POLICY.decide(at(20, 200, stale=True), high_then_stale.state)
    assert mining(stale) and "stale, holding" in stale["a"].reason
    after = POLICY.decide(at(21, 200), stale.state)
    assert mining(after), "the minutes before the stale gap must not count"
    curtailed = StrikeState(curtailed=True).to_json()
    assert not mining(POLICY.decide(at(0, 10, stale=True), curtailed))


def test_without_memory_it_believes_the_devices():
    asleep = [miner("a", watts=15, mining=False), miner("b", watts=15, mining=False)]
    first = POLICY.decide(at(0, 50, asleep))
    assert not mining(first), "every miner off reads as curtailed: restore waits for its window"
    assert mining(POLICY.decide(at(15, 50, asleep), first.state))


def test_least_efficient_miner_is_shed_when_the_budget_is_short():
    # 9 kW: two S21 at 4 kW each, 15 W each asleep counted; 1 kW left is below the S19 XP's 1.8 kW.
    site = at(0, 40, [miner("xp", curve=S19XP), miner("a"), miner("b")], budget=9_000)
    allocation = POLICY.decide(site)
    assert allocation["a"].watts == 4000 and allocation["b"].watts == 4000
    assert allocation["xp"].watts == 0 and "no room on site" in allocation["xp"].reason
    assert allocation.planned_watts() <= 9_000


def test_a_partial_fit_runs_below_the_maximum_but_not_below_the_minimum():
    allocation = POLICY.decide(at(0, 40, [miner("a"), miner("b")], budget=6_500))
    assert allocation["a"].watts == 4000
    assert allocation["b"].watts == pytest.approx(6_500 - 4000)


def test_gpu_jobs_run_at_full_caps_even_while_mining_is_curtailed():
    site = with_gpus(at(0, 300), gpu_node("gpu-1", job=job()), gpu_node("gpu-2"),
                     gpu_node("gpu-3", job=job("rented", tier=FlexTier.FIRM)))
    policy = StrikePricePolicy(StrikePriceOptions(curtail_after_minutes=0, min_dwell_seconds=0))
    allocation = policy.decide(site)
    assert allocation["a"].watts == 0
    assert allocation["gpu-1"].watts == H100_FULL_NODE_WATTS and "(full caps)" in allocation["gpu-1"].reason
    assert allocation["gpu-2"].watts == 0 and "no job" in allocation["gpu-2"].reason
    assert allocation["gpu-3"].watts == H100_FULL_NODE_WATTS and "firm" in allocation["gpu-3"].reason


def test_dwell_time_holds_a_miner_on_through_a_curtailment():
    policy = StrikePricePolicy(StrikePriceOptions(curtail_after_minutes=0, min_dwell_seconds=300))
    site = at(0, 300, [miner("a", state_since=10_000 - 60), miner("b", state_since=10_000 - 600)])
    allocation = policy.decide(site)
    assert allocation["a"].watts > 0 and "holding on (dwell time)" in allocation["a"].reason
    assert allocation["b"].watts == 0


def test_decide_is_pure_and_its_state_is_json():
    site = at(3, 120)
    state = StrikeState(above_since=T0).to_json()
    first, second = POLICY.decide(site, state), POLICY.decide(site, state)
    assert first == second
    assert StrikeState.from_json(json.loads(json.dumps(first.state))) == StrikeState(False, T0, None)


def test_advance_deciding_twice_at_the_same_instant_changes_nothing():
    options = POLICY.options
    once = advance(StrikeState(), T0, 150, options)
    assert advance(once, T0, 150, options) == once


def test_the_live_loop_carries_the_state_between_ticks():
    live = make_policy("strike-price", {"strike_usd_per_mwh": 100, "curtail_after_minutes": 10,
                                        "min_dwell_seconds": 0})
    assert isinstance(live, Carried)
    assert mining(live.decide(at(0, 150)))
    assert not mining(live.decide(at(10, 150)))


def test_a_bad_option_names_it():
    with pytest.raises(ValueError, match="strike-price option hysteresis_usd_per_mwh"):
        StrikePricePolicy.from_options({"hysteresis_usd_per_mwh": -1})
    with pytest.raises(ValueError, match="strike-price option strik_usd_per_mwh"):
        StrikePricePolicy.from_options({"strik_usd_per_mwh": 90})
