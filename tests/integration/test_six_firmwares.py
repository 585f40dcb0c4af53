"""Issue 11, end to end: a site of every firmware pyasic controls, run by the daemon's own loop
through the real pyasic, is cut and then restored. Judged by the simulators' true draw: the site
never goes over the budget in force, and after the restore every miner mines again within its
boot time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from privileged_ports import needs_port_80
from simsite import assert_never_over, running_site

from wattshift.daemon.journal.entries import EntryKind
from wattshift.model.budget import BudgetEvent
from wattshift.model.miner import PowerControl
from wattshift.simulators.site import MinerBatch

pytestmark = [
    needs_port_80,
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
    # pyasic leaves the socket of a call our deadline cancelled to the garbage collector.
    pytest.mark.filterwarnings("ignore:Exception ignored in.*StreamWriter:pytest.PytestUnraisableExceptionWarning"),
]

BOOT_S = 4.0  # real hashboards take minutes; the physics is the same, shorter
FIRMWARES = ["braiins", "luxos", "whatsminer", "whatsminer_v3", "antminer", "vnish"]
SITE = [MinerBatch(firmware, 2, physics={"wake_boot_s": BOOT_S}) for firmware in FIRMWARES]
TICK_S = 2.0


async def test_every_firmware_sheds_for_a_cut_and_mines_again_after_the_restore(tmp_path):
    async with running_site(SITE, tmp_path, first_address="127.0.150.1", budget_kw=60, identify=True,
                            site_extra={"tick_seconds": TICK_S}) as (sim, daemon, _budget, truth):
        controller, fleet = daemon.controller, daemon.fleet
        # Identified by pyasic (no firmware named in the site file), each as what it is.
        firmware = {m.host: fleet.driver(m.host).firmware for m in sim.miners}
        assert sorted(set(firmware.values())) == ["antminer", "braiins", "luxos", "vnish", "whatsminer"]
        controls = {m.firmware: fleet.capability(m.host).control for m in sim.miners}
        assert controls == {"braiins": PowerControl.WATTS, "luxos": PowerControl.PROFILES,
                            "whatsminer": PowerControl.WATTS, "whatsminer_v3": PowerControl.WATTS,
                            "antminer": PowerControl.ON_OFF, "vnish": PowerControl.ON_OFF}

        stop = asyncio.Event()
        loop = asyncio.create_task(controller.run(stop))
        try:
            async with asyncio.timeout(60):  # the loop brings the cold site up to its budget
                while sim.true_watts() < 20_000:
                    await asyncio.sleep(0.5)

            # A cut to 12 kW announced 10 s ahead, for 12 s; the loop must meet it before it starts.
            start = datetime.now(UTC) + timedelta(seconds=10)
            end = start + timedelta(seconds=12)
            await controller.add_budget_event(BudgetEvent("cut", 12_000, start, end))
            await asyncio.sleep((start - datetime.now(UTC)).total_seconds() + 1.0)
            assert sim.true_watts() <= 12_000
            slept = [m for m in sim.miners if m.physics.sleeping]
            assert len(slept) >= 6, "a 12 kW cut on a ~40 kW site sleeps half of it"

            # The cut ends: every miner slept for it mines again within its boot, a few ticks and
            # the ramp (2 kW/s here), whatever its firmware.
            await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
            restored = time.monotonic()
            async with asyncio.timeout(BOOT_S + 6 * TICK_S + 10):
                while not all(m.physics.mining and m.physics.hashrate_ths() > 0 for m in sim.miners):
                    await asyncio.sleep(0.2)
            woken_after = time.monotonic() - restored
        finally:
            stop.set()
            await loop
        assert {m.firmware for m in slept} <= set(FIRMWARES)
        results = await daemon.journal.query(kind=EntryKind.RESULT)
        assert not [e for e in results if e.data.get("failure") == "ignored"], "a booting miner is not a liar"
        assert woken_after > BOOT_S  # the boards booted: nothing hashed sooner
    assert_never_over(truth)
