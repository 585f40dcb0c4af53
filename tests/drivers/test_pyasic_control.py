"""What the firmware itself says decides how a miner is driven (issue 11, items 2, 4 and 5),
through the real pyasic client over real sockets against the firmware simulators.

- a model missing from the table is still driven in watts where the firmware takes watts,
  with the range the firmware reports (Braiins OS+ constraints, the Whatsminer power limit);
- firmware that cannot say is driven on/off, and the capability says where it came from;
- a sleep is confirmed by the firmware's state and a falling draw, not by one threshold;
- a wake is confirmed by the firmware's state while the hashboards still boot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from simulated_miners import (
    FAST_PHYSICS,
    SIM_KINDS,
    TEST_DEADLINES,
    SimKind,
    collect_pyasic_leftovers,
)

from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_backends import import_pyasic, power_range_for
from wattshift.drivers.pyasic_miner import Deadlines, PyasicMiner
from wattshift.model.miner import CapabilitySource, Failure, PowerControl
from wattshift.model.specs import SPECS
from wattshift.simulators.braiins import BraiinsMiner
from wattshift.simulators.miner import Fault, SimulatedMiner
from wattshift.simulators.whatsminer import WhatsminerMiner

pytestmark = [
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
]

S19_PRO = SPECS["Antminer S19 Pro"]
M30S_PLUS = SPECS["Whatsminer M30S+"]


@asynccontextmanager
async def started(sim: SimulatedMiner, deadlines: Deadlines = TEST_DEADLINES) -> AsyncIterator[PyasicMiner]:
    await sim.start()
    try:
        miner = await import_pyasic().get_miner(sim.host)
        assert miner is not None, f"pyasic did not identify {sim!r}"
        yield await PyasicMiner.open(miner, deadlines=deadlines)
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()


def test_the_models_here_are_not_in_the_table() -> None:
    # Otherwise the tests below would not show the range coming from the firmware.
    assert power_range_for("AntMiner S19 Pro") is None
    assert power_range_for("WhatsMiner M30S+ V10") is None


# -- item 2: the range from the firmware --------------------------------------------------------


async def test_braiins_s19_pro_is_driven_in_watts_by_its_constraints() -> None:
    async with started(BraiinsMiner("127.0.5.101", S19_PRO, seed=1, **FAST_PHYSICS)) as driver:
        capability = driver.capability
        assert capability.control is PowerControl.WATTS
        assert capability.source is CapabilitySource.FIRMWARE
        assert (capability.min_watts, capability.max_watts) == (S19_PRO.min_watts, S19_PRO.max_watts)
        assert await driver.set_power_limit(2000) == 2000
        assert "watts 1500-3600 W (firmware)" == capability.describe()


async def test_whatsminer_m30s_plus_is_driven_in_watts_by_its_power_limit() -> None:
    sim = WhatsminerMiner("127.0.6.101", M30S_PLUS, seed=1, **FAST_PHYSICS)
    async with started(sim) as driver:
        capability = driver.capability
        assert capability.control is PowerControl.WATTS
        assert capability.source is CapabilitySource.FIRMWARE
        assert capability.max_watts == M30S_PLUS.nominal_watts  # the factory limit it reports
        assert await driver.set_power_limit(2500) == 2500
        assert sim.physics.target_watts == 2500


async def test_a_whatsminer_limit_left_lowered_is_widened_to_the_nameplate() -> None:
    # A restart after a curtailment finds the limit still at 2000 W: that is not its ceiling.
    sim = WhatsminerMiner("127.0.6.103", M30S_PLUS, seed=3, **FAST_PHYSICS)
    sim.physics.set_target(2000)
    await sim.start()
    try:
        miner = await import_pyasic().get_miner(sim.host)
        driver = await PyasicMiner.open(miner, deadlines=TEST_DEADLINES, nameplate_watts=3400.0)
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()
    assert driver.capability.describe() == "watts 1700-3400 W (nameplate)"


async def test_braiins_without_constraints_falls_back_to_the_model_table() -> None:
    sim = BraiinsMiner("127.0.7.101", SPECS["Antminer S19 XP"], seed=1, **FAST_PHYSICS)
    sim.reports_constraints = False
    async with started(sim) as driver:
        capability = driver.capability
        assert (capability.control, capability.source) == (PowerControl.WATTS, CapabilitySource.MODEL_TABLE)
        assert "GetConstraints" in sim.commands_received


@pytest.mark.parametrize("firmware", ["braiins", "whatsminer"])
async def test_firmware_that_cannot_say_is_driven_on_off_at_its_draw(firmware: str) -> None:
    sim: Any
    if firmware == "braiins":
        sim = BraiinsMiner("127.0.7.102", S19_PRO, seed=2, **FAST_PHYSICS)
        sim.reports_constraints = False
    else:
        sim = WhatsminerMiner("127.0.6.102", M30S_PLUS, seed=2, **FAST_PHYSICS)
        sim.power_limit_supported = False
    async with started(sim) as driver:
        capability = driver.capability
        assert (capability.control, capability.source) == (PowerControl.ON_OFF, CapabilitySource.READING)
        assert capability.max_watts == pytest.approx(sim.spec.nominal_watts, abs=1.0)
        with pytest.raises(DeviceError) as caught:
            await driver.set_power_limit(capability.max_watts)
        assert caught.value.failure is Failure.UNSUPPORTED
        await driver.sleep()
        await driver.wake()  # an on/off miner wakes without a power target
        assert sim.physics.mining


async def test_the_operators_nameplate_stands_in_where_nothing_else_is_known() -> None:
    sim = BraiinsMiner("127.0.7.103", S19_PRO, seed=3, **FAST_PHYSICS)
    sim.reports_constraints = False
    await sim.start()
    try:
        miner = await import_pyasic().get_miner(sim.host)
        driver = await PyasicMiner.open(miner, deadlines=TEST_DEADLINES, nameplate_watts=3300.0)
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()
    assert driver.capability.describe() == "on/off at 3300 W (nameplate)"


# -- item 4: a slow shed is obeying -------------------------------------------------------------


@pytest.mark.parametrize("kind", SIM_KINDS, ids=lambda k: k.firmware)
async def test_a_slow_sleep_is_confirmed_by_state_and_a_falling_draw(kind: SimKind) -> None:
    sim = kind.simulator(kind.host(110), kind.spec, seed=110, ramp_watts_per_s=400.0, reboot_s=0.3)
    deadlines = Deadlines(call_s=1.0, confirm_s=1.0, poll_s=0.2)
    async with started(sim, deadlines) as driver:
        await driver.sleep()  # no IGNORED: it paused and its draw is coming down
        assert sim.physics.sleeping
        assert sim.true_watts() > 1000  # still winding down at 400 W/s
        assert sim.physics.hashrate_ths() == 0.0


@pytest.mark.parametrize("kind", SIM_KINDS, ids=lambda k: k.firmware)
async def test_a_sleep_whose_draw_does_not_fall_is_ignored(kind: SimKind) -> None:
    # The firmware says paused (hashrate 0) but the draw stays: the trend says it did not obey.
    sim = kind.simulator(kind.host(111), kind.spec, seed=111, ramp_watts_per_s=0.001, reboot_s=0.3)
    async with started(sim) as driver:
        with pytest.raises(DeviceError) as caught:
            await driver.sleep()
        assert caught.value.failure is Failure.IGNORED, caught.value.detail
        assert "hashes 0.0 TH/s" in caught.value.detail  # it paused; only the draw stayed


# -- item 5: a wake boots for minutes ------------------------------------------------------------


@pytest.mark.parametrize("kind", SIM_KINDS, ids=lambda k: k.firmware)
async def test_a_wake_is_confirmed_by_the_firmware_while_the_boards_boot(kind: SimKind) -> None:
    sim = kind.simulator(kind.host(112), kind.spec, seed=112, ramp_watts_per_s=1e6, reboot_s=0.3, wake_boot_s=120.0)
    async with started(sim) as driver:
        await driver.sleep()
        await driver.wake()  # not IGNORED, though nothing hashes yet
        assert sim.physics.mining
        reading = await driver.read()
        if kind.firmware != "luxos":  # LuxOS sets its frequency at once on wakeup
            assert sim.physics.booting
            assert reading.hashrate_ths == 0.0
            assert reading.watts is not None and reading.watts < driver.capability.min_watts * 0.1


async def test_a_luxos_that_echoes_its_old_profile_ignored_the_command(luxos: SimKind) -> None:
    # profileset answers success with the profile it still holds; pyasic returns False. That is
    # a miner saying OK and not doing it (IGNORED), not an error answer (REFUSED).
    sim = luxos.build(113)
    async with started(sim) as driver:
        sim.set_fault(Fault.IGNORE)
        with pytest.raises(DeviceError) as caught:
            await driver.set_power_limit(3000)
        assert caught.value.failure is Failure.IGNORED, caught.value.detail
        assert "the limit reads 3500" in caught.value.detail
        sim.set_fault(Fault.REFUSE)
        with pytest.raises(DeviceError) as caught:
            await driver.set_power_limit(3000)
        assert caught.value.failure is Failure.REFUSED, caught.value.detail


@pytest.mark.parametrize("kind", SIM_KINDS[1:], ids=lambda k: k.firmware)
async def test_a_read_says_booting_while_the_firmware_runs_boards_that_hash_nothing(kind: SimKind) -> None:
    sim = kind.simulator(kind.host(114), kind.spec, seed=114, ramp_watts_per_s=1e6, reboot_s=0.3, wake_boot_s=120.0)
    async with started(sim) as driver:
        assert (await driver.read()).booting is False  # mining
        await driver.sleep()
        assert (await driver.read()).booting is False  # asleep
        await driver.wake()
        booting = await driver.read()
        assert booting.booting is True and booting.hashrate_ths == 0.0


async def test_an_on_off_miner_found_asleep_counts_as_a_large_unit_not_as_its_sleep_draw() -> None:
    # Its draw asleep (12 W) says nothing of what it draws awake; 4 kW until told (max_kw).
    sim = WhatsminerMiner("127.0.6.104", M30S_PLUS, seed=4, **FAST_PHYSICS)
    sim.power_limit_supported = False
    sim.physics.sleep(settled=True)
    async with started(sim) as driver:
        assert driver.capability.describe() == "on/off at 4000 W (default)"
        await driver.wake()
        assert sim.physics.mining
