"""The site meter in the loop (fed as the MQTT bridge feeds it): a stale meter holds every
increase, a fresh one lets them through, and what the devices cannot see comes off the budget."""

from __future__ import annotations

import asyncio

import pytest
from simsite import assert_never_over, running_site

from wattshift.daemon.control.sequencer import Action
from wattshift.drivers.mqtt_meter import SiteMeter
from wattshift.simulators.site import MinerBatch

# Two Whatsminers start at their default target; cheap power and room to spare: the policy
# wants both at their maximum.
BATCHES = [MinerBatch("whatsminer", 2, "site", "Whatsminer M60S")]


def grants(report) -> list[str]:
    return [r.step.device_id for r in report.results if r.step.action is not Action.SLEEP and not r.step.is_shed]


async def test_a_stale_meter_holds_increases_and_a_fresh_one_releases_them(tmp_path):
    async with running_site(BATCHES, tmp_path, first_address="127.0.19.1", budget_kw=20, power_price=10) as (
        sim, daemon, _budget, truth,
    ):
        controller = daemon.controller
        clock = [0.0]
        meter = SiteMeter("site/meter", stale_after_seconds=30, clock=lambda: clock[0])
        controller.meter = meter

        held = await controller.run_once()  # no reading at all yet: stale
        assert "site meter stale: increases held" in held.notes
        assert grants(held) == []

        meter.feed(str(sim.true_watts() + 2_000).encode())  # 2 kW of cooling the devices cannot see
        measured = await controller.run_once()  # the load no device reports is measured now ...
        assert "load no device reports not measured yet: increases held" in measured.notes
        assert grants(measured) == []  # ... but this tick's budget did not allow for it
        overhead = controller.overhead.watts
        assert 1_500 < overhead < 2_500

        meter.feed(str(sim.true_watts() + 2_000).encode())
        fresh = await controller.run_once()
        assert fresh.notes == ()
        assert grants(fresh), fresh.plans[0]
        assert fresh.snapshot.budget_watts == pytest.approx(20_000 - overhead, abs=200)  # it comes off the budget

        clock[0] += 31  # the meter falls silent, and someone turns a miner down by hand
        await controller.fleet.driver(sim.miners[0].host).set_power_limit(3_000)
        silent = await controller.run_once()
        assert "site meter stale: increases held" in silent.notes
        assert grants(silent) == []
        await asyncio.sleep(0.5)  # let the true-draw monitor see the settled site
    assert_never_over(truth)


async def metered(sim, meter, hidden_watts: list[float]) -> None:
    """A gateway publishing the site's meter every 0.2 s: the miners' true draw and a load no
    device reports (``hidden_watts[0]``, which a test may switch on)."""
    while True:
        meter.feed(str(sim.true_watts() + hidden_watts[0]).encode())
        await asyncio.sleep(0.2)


# An S19 XP at 2 kW and an idle S21 under a 4.2 kW budget: the S21 earns more per watt, so
# power moves from the XP to it, the S21's wake deferred behind the XP's shed.
SWAP = [MinerBatch("braiins", 1, "site", "Antminer S19 XP"), MinerBatch("luxos", 1, "site", "Antminer S21")]


@pytest.mark.parametrize("hidden_watts, address", [(0.0, "127.0.19.11"), (1_500.0, "127.0.19.21")])
async def test_a_grant_behind_a_shed_waits_for_room_on_the_meter(tmp_path, hidden_watts, address):
    async with running_site(SWAP, tmp_path, first_address=address, budget_kw=4.2) as (sim, daemon, _budget, truth):
        xp, s21 = sim.miners
        s21.physics.sleep(settled=True)
        xp.physics.set_target(2000)
        await asyncio.sleep(1.5)  # the starting state, set by hand, settles
        truth.excursions.clear()  # (on the way there it was over: not the daemon's doing)
        controller = daemon.controller
        controller.meter = SiteMeter("site/meter", stale_after_seconds=5)
        hidden = [0.0]
        feeder = asyncio.create_task(metered(sim, controller.meter, hidden))
        try:
            await asyncio.sleep(0.5)
            await controller.observe()  # the loop has measured what no device reports: nothing
            # Then a heater on the site's feed is switched on: over is over, seen or not.
            hidden[0] = truth.unmetered_watts = hidden_watts
            await asyncio.sleep(0.5)
            report = await controller.run_once()
            first = report.plans[0]
            assert [s.device_id for s in first.sheds] == [xp.host]
            assert [s.device_id for s in first.deferred] == [s21.host]
            woken = [r.step.device_id for r in report.results if r.step.action is Action.WAKE]
            if hidden_watts:
                # The devices say the XP's power is free; the meter says the site has no room
                # for the S21 (awake, it would take the site to 4.7 kW): it stays asleep, and
                # the load comes off the budget from now on.
                assert "sheds not confirmed in time: their miners stay at worst case" in report.notes
                assert woken == []
                assert controller.overhead.watts > 0.15 * hidden_watts  # learning it (smoothed)
            else:
                assert report.notes == ()
                assert woken == [s21.host]
            await asyncio.sleep(0.5)
        finally:
            feeder.cancel()
    assert_never_over(truth)
