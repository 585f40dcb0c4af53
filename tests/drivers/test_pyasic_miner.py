"""PyasicMiner against every firmware simulator, through the real pyasic client and sockets.

Each test runs once per firmware in ``SIM_KINDS`` (tests/drivers/conftest.py); the numbers the
driver reports are compared with the simulator's physics, and every fault the simulators can
play must come out as the right :class:`Failure`.
"""

from __future__ import annotations

import asyncio

import pytest
from simulated_miners import SimKind

from wattshift.drivers.base import DeviceError, MinerDriver
from wattshift.drivers.pyasic_backends import import_pyasic
from wattshift.drivers.pyasic_miner import Deadlines, PyasicMiner
from wattshift.model.miner import CapabilitySource, Failure, PowerControl
from wattshift.simulators.luxos import LuxOSMiner, build_profiles
from wattshift.simulators.miner import Fault, SimulatedMiner

pytestmark = [
    # When a deadline cancels a pyasic call, pyasic drops its socket without closing it and the
    # stream's finaliser warns; the socket is closed all the same. The warning is pyasic's.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    # pyasic's Whatsminer login calls passlib the deprecated way; with warnings as errors the
    # warning would fail the login inside pyasic.
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
]


async def open_driver(sim: SimulatedMiner, deadlines: Deadlines) -> PyasicMiner:
    miner = await import_pyasic().get_miner(sim.host)
    assert miner is not None, f"pyasic did not identify {sim!r}"
    return await PyasicMiner.open(miner, deadlines=deadlines)


@pytest.fixture
async def driver(sim: SimulatedMiner, deadlines: Deadlines) -> PyasicMiner:
    return await open_driver(sim, deadlines)


# -- capability and reading -------------------------------------------------------------------


async def test_it_is_a_miner_driver_with_the_firmwares_capability(
    kind: SimKind, sim: SimulatedMiner, driver: PyasicMiner
) -> None:
    assert isinstance(driver, MinerDriver)
    assert driver.device_id == sim.host
    assert driver.firmware == kind.firmware
    capability = driver.capability
    assert capability.control is kind.control
    if kind.control is PowerControl.PROFILES:
        # Read from the miner, not from a table.
        assert capability.profiles_watts == tuple(float(p.watts) for p in build_profiles(kind.spec))
        assert capability.min_watts == capability.profiles_watts[0]
        assert capability.max_watts == capability.profiles_watts[-1]
        assert capability.source is CapabilitySource.FIRMWARE
    elif kind.firmware == "whatsminer":
        # Watts, as its firmware takes them; its power limit reads the factory 3422 W, which
        # the model table's nameplate widens (see test_pyasic_control for a model without).
        assert (capability.min_watts, capability.max_watts) == (kind.spec.min_watts, kind.spec.max_watts)
        assert sim.physics.default_target_watts < capability.max_watts
        assert capability.source is CapabilitySource.MODEL_TABLE
    else:
        # Braiins OS+: the power-target constraints it reports over gRPC.
        assert (capability.min_watts, capability.max_watts) == (kind.spec.min_watts, kind.spec.max_watts)
        assert capability.source is CapabilitySource.FIRMWARE


async def test_read_reports_the_physics(kind: SimKind, sim: SimulatedMiner, driver: PyasicMiner) -> None:
    reading = await driver.read()
    physics = sim.physics
    assert reading.device_id == sim.host and reading.firmware == kind.firmware
    assert reading.model is not None and kind.model.split()[-1].lower() in reading.model.lower()
    assert reading.watts == pytest.approx(physics.power_watts(), abs=1.0)
    assert reading.limit_watts == pytest.approx(physics.target_watts, abs=1.0)
    assert reading.hashrate_ths == pytest.approx(physics.hashrate_ths(), rel=0.01)
    assert reading.mining is True
    assert len(reading.temperatures_c) == kind.spec.hashboards
    assert all(physics.ambient_c < t < 120 for t in reading.temperatures_c)
    assert reading.fans_rpm and all(rpm > 0 for rpm in reading.fans_rpm)


# -- control ----------------------------------------------------------------------------------


async def test_set_power_limit_holds_what_the_firmware_can(sim: SimulatedMiner, driver: PyasicMiner) -> None:
    held = await driver.set_power_limit(3000)
    assert held == driver.capability.achievable_watts(3000)
    assert sim.physics.target_watts == pytest.approx(held, abs=1.0)
    assert (await driver.read()).limit_watts == pytest.approx(held, abs=1.0)


async def test_luxos_snaps_down_to_a_profile(luxos: SimKind, deadlines: Deadlines) -> None:
    async with luxos.build(20) as sim:
        driver = await open_driver(sim, deadlines)
        assert await driver.set_power_limit(3000) == 2962  # the 460MHz profile
        assert sim.active_profile.name == "460MHz" and sim.atm_enabled


async def test_a_limit_below_the_lowest_setting_is_unsupported(sim: SimulatedMiner, driver: PyasicMiner) -> None:
    too_low = driver.capability.min_watts - 1
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(too_low)
    assert caught.value.failure is Failure.UNSUPPORTED
    assert f"{too_low:.0f} W" in caught.value.detail
    assert sim.physics.target_watts == sim.spec.nominal_watts


async def test_sleep_then_wake(sim: SimulatedMiner, driver: PyasicMiner) -> None:
    await driver.sleep()
    assert sim.physics.sleeping
    asleep = await driver.read()
    assert asleep.mining is False  # LuxOS too, although pyasic says is_mining=True there
    assert asleep.watts == pytest.approx(sim.spec.sleep_watts, abs=1.0)
    await driver.wake()
    assert not sim.physics.sleeping
    assert (await driver.read()).mining is True


async def test_luxos_commands_survive_a_reboot_that_ended_the_session(luxos: SimKind, deadlines: Deadlines) -> None:
    async with luxos.build(21) as sim:
        assert isinstance(sim, LuxOSMiner)
        driver = await open_driver(sim, deadlines)
        await driver.sleep()  # pyasic now holds a session id
        other_client = await import_pyasic().get_miner(sim.host)
        assert await other_client.reboot() is True  # LuxOS forgets every session
        await asyncio.sleep(sim.physics.reboot_s + 0.1)
        await driver.sleep()
        assert sim.physics.sleeping


# -- faults -----------------------------------------------------------------------------------

OPERATIONS = ("read", "set_power_limit", "sleep", "wake")
COMMANDS = OPERATIONS[1:]
# What each fault must come out as, per operation; None: the operation succeeds.
EXPECTED: dict[Fault, dict[str, Failure | None]] = {
    Fault.NO_ANSWER: dict.fromkeys(OPERATIONS, Failure.NO_ANSWER),
    Fault.HANG: dict.fromkeys(OPERATIONS, Failure.TIMEOUT),
    Fault.GARBAGE: dict.fromkeys(OPERATIONS, Failure.GARBAGE),
    Fault.REFUSE: {"read": None, **dict.fromkeys(COMMANDS, Failure.REFUSED)},
    Fault.IGNORE: {"read": None, **dict.fromkeys(COMMANDS, Failure.IGNORED)},
}


async def operate(driver: PyasicMiner, operation: str) -> object:
    if operation == "set_power_limit":
        return await driver.set_power_limit(driver.capability.min_watts)
    method = getattr(driver, operation)
    return await method()


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("fault", list(EXPECTED), ids=str)
async def test_each_fault_is_classified(sim: SimulatedMiner, driver: PyasicMiner, fault: Fault, operation: str) -> None:
    if operation == "wake":
        sim.physics.sleep(settled=True)  # so that waking would change something
    before = (sim.physics.sleeping, sim.physics.target_watts)
    sim.set_fault(fault)
    expected = EXPECTED[fault][operation]
    if expected is None:
        assert (await operate(driver, operation)) is not None
    else:
        with pytest.raises(DeviceError) as caught:
            await operate(driver, operation)
        assert caught.value.failure is expected, caught.value.detail
        assert caught.value.device_id == sim.host
    assert (sim.physics.sleeping, sim.physics.target_watts) == before, "a faulty miner changed state"


async def test_a_miner_that_is_gone_does_not_answer(sim: SimulatedMiner, driver: PyasicMiner) -> None:
    await sim.stop()  # connections are now refused, which pyasic reports as an empty answer
    for operation in ("read", "sleep"):
        with pytest.raises(DeviceError) as caught:
            await operate(driver, operation)
        assert caught.value.failure is Failure.NO_ANSWER, caught.value.detail
        assert "refused" in caught.value.detail.lower()


async def test_a_hang_is_cut_at_the_call_deadline(
    sim: SimulatedMiner, driver: PyasicMiner, deadlines: Deadlines
) -> None:
    sim.set_fault(Fault.HANG)
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeviceError):
        await driver.read()
    assert asyncio.get_running_loop().time() - started < deadlines.call_s + 0.2
