"""The site launcher with stock Antminer, VNish and Whatsminer v3 miners next to the others."""

from __future__ import annotations

import pytest
from privileged_ports import needs_port_80

from wattshift.daemon.config.site import SiteConfig
from wattshift.drivers.pyasic_fleet import MinerFleet
from wattshift.model.miner import MinerReading
from wattshift.simulators.site import SITE_FILE_FIRMWARE, MinerBatch, SimulatedSite

pytestmark = [
    needs_port_80,
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
]

FIRMWARES = ["luxos", "whatsminer", "braiins", "antminer", "vnish", "whatsminer_v3"]


async def test_a_site_of_all_six_firmwares_is_read_through_its_site_file() -> None:
    site = SimulatedSite([MinerBatch(f, 2) for f in FIRMWARES], first_address="127.0.148.1", start_asleep=True)
    assert [m.firmware for m in site.miners] == [f for f in FIRMWARES for _ in range(2)]
    assert len({m.host for m in site.miners}) == 12
    assert all(m.physics.sleeping for m in site.miners)
    async with site:
        config = SiteConfig.model_validate(
            site.site_file(name="six", budget_kw=50, drivers={"call_timeout_seconds": 5})
        )
        assert [g.firmware for g in config.miners] == [
            "luxos", "whatsminer", "braiins", "antminer", "vnish", "whatsminer"
        ]
        readings = await MinerFleet.from_site(config).read_all()
    assert all(isinstance(r, MinerReading) for r in readings.values()), readings
    by_host = {host: r for host, r in readings.items() if isinstance(r, MinerReading)}
    for miner in site.miners:
        reading = by_host[miner.host]
        assert reading.firmware == SITE_FILE_FIRMWARE.get(miner.firmware, miner.firmware)
        assert reading.mining is False, (miner, reading)  # launched asleep, and every firmware says so
