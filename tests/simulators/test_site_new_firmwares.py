"""The site launcher with stock Antminer, VNish and Whatsminer v3 miners next to the others."""

from __future__ import annotations

from privileged_ports import needs_port_80

from wattshift.daemon.config import SiteConfig
from wattshift.simulators.site import MinerBatch, SimulatedSite


pytestmark = needs_port_80

async def test_a_site_of_all_six_firmwares_starts_and_writes_a_valid_site_file() -> (
    None
):
    firmwares = ["luxos", "whatsminer", "braiins", "antminer", "vnish", "whatsminer_v3"]
    site = SimulatedSite(
        [MinerBatch(f, 2) for f in firmwares],
        first_address="127.0.148.1",
        start_asleep=True,
    )
    assert [m.firmware for m in site.miners] == [f for f in firmwares for _ in range(2)]
    assert len({m.host for m in site.miners}) == 12
    assert all(m.physics.sleeping for m in site.miners)
    async with site:
        config = SiteConfig.model_validate(site.site_file(name="six", budget_kw=50))
    assert [g.firmware for g in config.miners] == [
        "luxos",
        "whatsminer",
        "braiins",
        "antminer",
        "vnish",
        "whatsminer",
    ]
