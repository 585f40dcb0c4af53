"""The site meter in the loop (fed as the MQTT bridge feeds it): a stale meter holds every
increase, a fresh one lets them through, and what the devices cannot see comes off the budget."""

from __future__ import annotations

import asyncio

from simsite import assert_never_over, running_site

from wattshift.daemon.sequencer import Action
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
        fresh = await controller.run_once()
        assert fresh.notes == ()
        assert grants(fresh), fresh.plans[0]
        overhead = controller.overhead.watts
        assert 1_500 < overhead < 2_500

        again = await controller.run_once()
        assert again.snapshot.budget_watts == 20_000 - overhead  # it comes off the budget

        clock[0] += 31  # the meter falls silent, and someone turns a miner down by hand
        await controller.fleet.driver(sim.miners[0].host).set_power_limit(3_000)
        silent = await controller.run_once()
        assert "site meter stale: increases held" in silent.notes
        assert grants(silent) == []
        await asyncio.sleep(0.5)  # let the true-draw monitor see the settled site
    assert_never_over(truth)
