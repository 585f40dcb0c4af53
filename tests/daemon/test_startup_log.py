"""Start-up identification logs a progress line and one summary, not a line per miner (issue 13).

The fleet is the real one (pyasic over sockets) against simulated LuxOS miners, with three
addresses where nothing listens; the progress line is shown with a fleet that takes its time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from simulated_miners import TEST_DEADLINES, collect_pyasic_leftovers

from wattshift.daemon.runtime.startup import identify_miners, summary
from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from wattshift.model.miner import Failure
from wattshift.model.specs import SPECS
from wattshift.simulators.luxos import LuxOSMiner

pytestmark = pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")

SUBNET = "127.113.0"


async def test_identifying_a_fleet_logs_one_summary_and_the_detail_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    miners = [LuxOSMiner(f"{SUBNET}.{n}", SPECS["Antminer S21"], seed=n) for n in range(1, 13)]
    silent = [f"{SUBNET}.{n}" for n in range(200, 203)]  # nothing listens there
    await asyncio.gather(*(m.start() for m in miners))
    try:
        fleet = MinerFleet([MinerTarget(m.host) for m in miners] + [MinerTarget(h) for h in silent],
                           FleetSettings(deadlines=TEST_DEADLINES))
        with caplog.at_level(logging.DEBUG, logger="wattshift"):
            found = await identify_miners(fleet)
        await fleet.close()
    finally:
        await asyncio.gather(*(m.stop() for m in miners))
        await collect_pyasic_leftovers()
    assert sum(1 for r in found.values() if not isinstance(r, DeviceError)) == 12
    info = [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and r.name.startswith("wattshift.daemon.runtime")]
    assert len(info) == 1, info
    assert info[0].startswith("identified 12 of 15 miners in ")
    assert "12 luxos AntMiner S21" in info[0]  # the model as pyasic names it and "3 not identified: " in info[0]
    assert all(h in info[0] for h in silent)
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert all(f"{m.host}: luxos" in debug for m in miners)
    assert not [r for r in caplog.records if r.levelno == logging.INFO and f"{SUBNET}.1: " in r.getMessage()]


class SlowFleet:
    """Identifies one miner every 50 ms, as a large site does over its concurrency bound."""

    def __init__(self, count: int) -> None:
        self.device_ids = [f"10.0.0.{n}" for n in range(1, count + 1)]
        self.known: dict[str, Any] = {}

    def driver(self, device_id: str) -> Any:
        return self.known.get(device_id)

    async def discover(self) -> Mapping[str, Any]:
        for device_id in self.device_ids:
            await asyncio.sleep(0.05)
            self.known[device_id] = Driver("luxos", "Antminer S21")
        return dict(self.known)


class Driver:
    def __init__(self, firmware: str, model: str | None) -> None:
        self.firmware, self.model = firmware, model


async def test_a_long_identification_shows_progress(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wattshift.daemon.runtime.startup"):
        await identify_miners(SlowFleet(20), every_s=0.5)
    lines = [r.getMessage() for r in caplog.records]
    progress = [line for line in lines if line.startswith("identifying miners: ")]
    assert 1 <= len(progress) < 20, lines  # every 0.5 s over about a second: not one per miner
    assert " of 20 identified so far (" in progress[0]
    assert lines[-1].startswith("identified 20 of 20 miners in ")


def test_the_summary_counts_per_kind_and_names_a_few_failures() -> None:
    found: dict[str, Any] = {f"10.0.0.{n}": Driver("braiins", "Antminer S19 XP") for n in range(1, 4)}
    found["10.0.0.9"] = Driver("luxos", None)
    found |= {f"10.0.1.{n}": DeviceError(f"10.0.1.{n}", Failure.NO_ANSWER, "refused") for n in range(1, 8)}
    line = summary(found, 2.04)
    assert line == ("identified 4 of 11 miners in 2.0 s: 3 braiins Antminer S19 XP, 1 luxos unknown model; "
                    "7 not identified: no_answer 7 (10.0.1.1, 10.0.1.2, 10.0.1.3, 10.0.1.4, 10.0.1.5, ...)")
