"""Switching costs in the built-in policies (issue 15): a start pays its wear and boot, a miner
keeps its minimum up and down times, and a limit still sheds a miner within its minimum up time.

The S21 below boots 300 s at 350 W, wears $0.25 a start, keeps 900 s up and 900 s down (the
spec table's figures). At $45/PH/day its best rung (1800 W) earns $151/MWh.
"""

from __future__ import annotations

from factories import miner, snapshot

from wattshift.model.specs import NO_MINER_SWITCHING, SPECS
from wattshift.policies.merit_order import MeritOrderOptions, MeritOrderPolicy
from wattshift.policies.strike_price import StrikePriceOptions, StrikePricePolicy

SW = SPECS["Antminer S21"].switching
CLOCK = 10_000.0
MERIT = MeritOrderPolicy(MeritOrderOptions(min_dwell_seconds=0, hysteresis_usd_per_mwh=2))
STRIKE = StrikePricePolicy(StrikePriceOptions(strike_usd_per_mwh=100, hysteresis_usd_per_mwh=5,
                                              curtail_after_minutes=0, restore_after_minutes=0, min_dwell_seconds=0))


def off(since: float | None = None, switching=SW):
    return miner("a", watts=12, mining=False, state_since=since, switching=switching)


def on(since: float | None = None, switching=SW):
    return miner("a", watts=3500, limit=3500, state_since=since, switching=switching)


def test_merit_order_keeps_a_stopped_miner_off_through_its_minimum_down_time() -> None:
    early = MERIT.decide(snapshot([off(since=CLOCK - 600)], budget=10_000, power=20))["a"]
    assert early.watts == 0 and "holding off (dwell time)" in early.reason
    assert MERIT.decide(snapshot([off(since=CLOCK - SW.min_down_seconds)], budget=10_000, power=20))["a"].watts > 0


def test_merit_order_keeps_a_started_miner_on_through_its_minimum_up_time_unless_a_limit_sheds_it() -> None:
    # $200/MWh is above anything the S21 earns: past its minimum up time it goes off.
    assert MERIT.decide(snapshot([on(since=CLOCK - 600)], budget=10_000, power=200))["a"].watts == 1800
    assert MERIT.decide(snapshot([on(since=CLOCK - SW.min_up_seconds)], budget=10_000, power=200))["a"].watts == 0
    # A cut below its minimum: the limit wins over the minimum up time.
    assert MERIT.decide(snapshot([on(since=CLOCK - 600)], budget=1_500, power=20))["a"].watts == 0


def test_merit_order_starts_a_miner_only_when_it_earns_back_its_start() -> None:
    # At $140/MWh the S21's best rung beats the price by $11/MWh; its start costs about $0.28,
    # which over 4 h of 1.785 kW is ~$39/MWh: not worth it. Running, it stays on; free, it starts.
    assert MERIT.decide(snapshot([off()], budget=10_000, power=140))["a"].watts == 0
    assert MERIT.decide(snapshot([on()], budget=10_000, power=140))["a"].watts > 0
    assert MERIT.decide(snapshot([off(switching=NO_MINER_SWITCHING)], budget=10_000, power=140))["a"].watts > 0
    # A longer horizon spreads the same start thinner: then it pays.
    patient = MeritOrderPolicy(MeritOrderOptions(min_dwell_seconds=0, hysteresis_usd_per_mwh=2,
                                                 miner_horizon_seconds=86_400))
    assert patient.decide(snapshot([off()], budget=10_000, power=140))["a"].watts > 0


def test_strike_price_keeps_minimum_up_and_down_times_and_a_limit_still_sheds() -> None:
    held_off = STRIKE.decide(snapshot([off(since=CLOCK - 600)], budget=10_000, power=20))["a"]
    assert held_off.watts == 0 and "holding off (dwell time)" in held_off.reason
    assert STRIKE.decide(snapshot([off(since=CLOCK - 900)], budget=10_000, power=20))["a"].watts == 4000
    held_on = STRIKE.decide(snapshot([on(since=CLOCK - 600)], budget=10_000, power=300))["a"]
    assert held_on.watts == 4000 and "holding on (dwell time)" in held_on.reason
    assert STRIKE.decide(snapshot([on(since=CLOCK - 600)], budget=1_500, power=300))["a"].watts == 0


def test_strike_price_starts_a_miner_only_when_it_earns_back_its_start() -> None:
    # Below the strike, but at $5/PH/day an S21 at 4000 W earns $0.044/h against $0.38/h of power.
    poor = STRIKE.decide(snapshot([off()], budget=10_000, power=90, hashprice=5))["a"]
    assert poor.watts == 0 and "a start costs $0.26 and earns $-1.26 in 4 h" in poor.reason
    assert STRIKE.decide(snapshot([on()], budget=10_000, power=90, hashprice=5))["a"].watts == 4000
    assert STRIKE.decide(snapshot([off()], budget=10_000, power=60, hashprice=45))["a"].watts == 4000
    # Prices it cannot trust say nothing about the start: the strike decides alone.
    assert STRIKE.decide(snapshot([off()], budget=10_000, power=90, hashprice=None))["a"].watts == 4000
