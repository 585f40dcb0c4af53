"""Identification of VNish next to stock Antminers: stable, whichever of pyasic's probes wins.

pyasic races ``GET /`` (AnthillOS: VNish) against 4028's ``version`` (which VNish's bmminer
answers like stock firmware: stock Antminer) and keeps the first answer it recognises
(issue 11, item 3: right 0, 2, 2 and 9 times in four series of 10). ``identify`` confirms a
stock verdict with the web probe alone.
"""

from __future__ import annotations

import asyncio
import importlib

import pytest
from simulated_miners import collect_pyasic_leftovers

from wattshift.drivers.base import MinerReading
from wattshift.drivers.pyasic_backends import identify, import_pyasic, traits_for
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from wattshift.drivers.pyasic_miner import Deadlines
from wattshift.simulators.antminer import AntminerMiner
from wattshift.simulators.miner import SimulatedMiner
from wattshift.simulators.physics import SPECS
from wattshift.simulators.vnish import VNishMiner

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")]

S21 = SPECS["Antminer S21"]
# 25 miners polled at once by one process on a loaded machine: generous deadlines.
DEADLINES = Deadlines(call_s=10.0, confirm_s=10.0)
FAST = {"ramp_watts_per_s": 1e6, "wake_boot_s": 0.0}


async def start_all(miners: list[SimulatedMiner]) -> None:
    await asyncio.gather(*(m.start() for m in miners))


async def stop_all(miners: list[SimulatedMiner]) -> None:
    await asyncio.gather(*(m.stop() for m in miners))
    await collect_pyasic_leftovers()


def test_the_web_probe_identify_relies_on_is_still_there() -> None:
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    assert callable(factory.miner_factory._get_miner_web)


async def test_plain_pyasic_takes_vnish_for_stock_when_4028_answers_first() -> None:
    # A UI page slower than bmminer's "version" reply: the race is lost every time.
    slow_page = VNishMiner("127.0.143.1", S21, page_delay_s=1.0, **FAST)
    miners: list[SimulatedMiner] = [slow_page]
    await start_all(miners)
    try:
        misread = await import_pyasic().get_miner(slow_page.host)
        assert traits_for(misread).firmware == "antminer"  # what the issue saw
        confirmed = await identify(slow_page.host)
        assert traits_for(confirmed).firmware == "vnish"
        assert confirmed.raw_model == "S21"
    finally:
        await stop_all(miners)


async def test_twenty_vnish_and_five_stock_antminers_are_all_identified() -> None:
    vnish: list[SimulatedMiner] = [VNishMiner(f"127.0.143.{n}", S21, seed=n, **FAST) for n in range(10, 30)]
    stock: list[SimulatedMiner] = [AntminerMiner(f"127.0.143.{n}", S21, seed=n, **FAST) for n in range(40, 45)]
    miners = vnish + stock
    await start_all(miners)
    try:
        # One after another ("in a row"), then the whole site at once as the daemon does it.
        for miner in vnish:
            assert traits_for(await identify(miner.host)).firmware == "vnish", miner
        fleet = MinerFleet([MinerTarget(m.host) for m in miners], FleetSettings(deadlines=DEADLINES))
        found = await fleet.discover()
        firmwares = {host: getattr(driver, "firmware", driver) for host, driver in found.items()}
        assert firmwares == {m.host: m.firmware for m in miners}
        readings = await fleet.read_all()
        assert all(isinstance(r, MinerReading) and r.mining for r in readings.values()), readings
    finally:
        await stop_all(miners)
