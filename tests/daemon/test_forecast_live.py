"""The live forecast: what the control loop attaches to a planning policy's snapshot.

Live, the site knows its budget schedule (events announced over MQTT or by the operator, with
their start and end) and no published price yet: the forecast carries the announced budget, step
by step, less the reserve and what the devices cannot see, and the policy holds the price now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import miner, snapshot
from price_payloads import TARIFF

from wattshift.daemon.control.observe import attach_forecast
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.forecast import budget_outlook
from wattshift.policies.base import carried
from wattshift.policies.lookahead import LookaheadOptions, LookaheadPolicy
from wattshift.policies.merit_order import MeritOrderPolicy

NOW = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)


def schedule() -> BudgetSchedule:
    s = BudgetSchedule(100_000)
    # Starts 57.5 minutes from now, inside the step from 55 to 60 minutes: that step takes it.
    s.add(BudgetEvent("4cp", 40_000, NOW + timedelta(minutes=57.5), NOW + timedelta(minutes=90)))
    return s


def test_the_outlook_is_the_lowest_budget_over_each_step_less_what_is_held_back():
    steps = budget_outlook(schedule(), NOW, seconds=2 * 3600, step_seconds=300, less_watts=2_000)
    assert len(steps) == 24
    by_offset = {f.offset_seconds: f.budget_watts for f in steps}
    assert by_offset[3000] == 98_000
    assert by_offset[3300] == 38_000  # the event begins inside this step
    assert by_offset[5100] == 38_000
    assert by_offset[5400] == 98_000  # it ended at 90 minutes
    assert all(f.power_usd_per_mwh is None for f in steps)  # nothing published live


def test_a_planning_policy_gets_the_announced_budget_and_any_other_gets_nothing():
    site = snapshot([miner("a")], budget=98_000)
    planning = carried(LookaheadPolicy(LookaheadOptions(horizon_hours=2)))
    seen = attach_forecast(site, [MeritOrderPolicy(), planning], schedule(), NOW, less_watts=2_000).forecast
    assert len(seen) == 24 and min(f.budget_watts for f in seen) == 38_000
    assert attach_forecast(site, [MeritOrderPolicy()], schedule(), NOW, less_watts=2_000).forecast == ()


def test_lookahead_acts_on_a_live_announced_cut():
    # Cheap power, miners asleep, a cut to nothing announced for ten minutes from now: no start.
    from wattshift.model.specs import MinerSwitching

    switching = MinerSwitching(300, 350, 0.25, 900, 900)
    s = BudgetSchedule(20_000)
    s.add(BudgetEvent("dr", 100, NOW + timedelta(minutes=10), NOW + timedelta(hours=3)))
    site = snapshot([miner(m, watts=12, mining=False, switching=switching, state_since=0.0) for m in "ab"],
                    budget=20_000, power=30)
    policy = LookaheadPolicy()
    cut = attach_forecast(site, [policy], s, NOW, less_watts=0.0)
    assert [policy.decide(cut)[m].watts for m in "ab"] == [0, 0]
    calm = attach_forecast(site, [policy], BudgetSchedule(20_000), NOW, less_watts=0.0)
    assert all(policy.decide(calm)[m].watts > 0 for m in "ab")


def test_a_time_of_use_tariff_publishes_its_prices_into_the_forecast(tmp_path):
    from wattshift.daemon.config.price import PricesConfig
    from wattshift.daemon.config.yamlfile import parse_model
    from wattshift.daemon.runtime.feeds import make_price_feed
    from wattshift.drivers.prices import published_price

    tariff = parse_model(TARIFF, PricesConfig, file="site.yaml")
    feed = make_price_feed(tariff.power_usd_per_mwh, "power", tmp_path, lambda: 0.0, {})  # behind the sanity rules
    price_at = published_price(feed)
    assert price_at is not None
    # 1 July 2026 is a Wednesday; 15:00 UTC is 10:00 in Chicago: off-peak now, peak from 19:00 UTC.
    site = snapshot([miner("a")], budget=98_000)
    steps = attach_forecast(site, [LookaheadPolicy(LookaheadOptions(horizon_hours=6))], schedule(), NOW,
                            less_watts=2_000, price_at=price_at).forecast
    by_offset = {f.offset_seconds: f.power_usd_per_mwh for f in steps}
    assert by_offset[0] is None  # now is the feed's own quote, not a forecast
    assert by_offset[300] == by_offset[13_800] == 32
    assert by_offset[14_400] == by_offset[21_300] == 95
    # A feed that knows only the price now publishes nothing.
    from wattshift.drivers.prices import FixedPrice

    assert published_price(FixedPrice(40.0)) is None


async def test_a_planning_policy_decides_off_the_event_loop():
    import asyncio
    import threading

    from wattshift.daemon.control.deciding import decide
    from wattshift.policies.base import Allocation

    site = snapshot([miner("a")], budget=10_000)
    loop_ran = threading.Event()

    class Planning:
        name = "planning"
        forecast_seconds = 3600.0

        def decide(self, _snapshot):
            # Set by a task on the event loop: only if the loop runs while this decides.
            return Allocation((), f"loop ran meanwhile: {loop_ran.wait(timeout=5)}")

    class Quick:
        name = "quick"

        def decide(self, _snapshot):
            return Allocation((), threading.current_thread().name)

    async def poke() -> None:
        loop_ran.set()

    task = asyncio.create_task(poke())
    assert (await decide(Planning(), site)).summary == "loop ran meanwhile: True"
    await task
    assert (await decide(Quick(), site)).summary == threading.main_thread().name  # the others, as before
