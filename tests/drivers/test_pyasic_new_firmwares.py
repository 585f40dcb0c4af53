"""Stock Antminer, VNish and Whatsminer API v3 through the real pyasic, over real sockets.

The same checks as ``test_pyasic_miner.py`` runs for LuxOS, Braiins OS+ and Whatsminer v2, one
row per firmware in ``KINDS``, with what pyasic 0.79.0 can and cannot do on each spelt out in
``Kind`` (these rows are what the README's firmware table reports):

- stock Antminer: no power reading, no power target; sleep and wake through the miner mode,
  which restarts bmminer; pyasic ignores the answer to ``set_miner_conf``, so a refusal is seen
  only as a command without effect (IGNORED);
- VNish: power read from the web API; ``set_power_limit`` always False in pyasic 0.79.0 (its
  config parser never sees preset mode), so the driver treats it as on/off; sleep and wake;
- Whatsminer API v3: watts, limit, sleep and wake; pyasic ignores the answer to
  ``set.miner.power_limit``, so a refused limit is IGNORED too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from privileged_ports import needs_port_80
from simulated_miners import collect_pyasic_leftovers

from wattshift.daemon.control.actuator import StepResult, execute
from wattshift.daemon.control.sequencer import Action, Step
from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_backends import import_pyasic
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from wattshift.drivers.pyasic_miner import Deadlines, PyasicMiner
from wattshift.model.miner import Failure, MinerReading, PowerControl
from wattshift.model.specs import SPECS
from wattshift.simulators.antminer import AntminerMiner
from wattshift.simulators.miner import Fault, SimulatedMiner
from wattshift.simulators.vnish import VNishMiner
from wattshift.simulators.whatsminer_v3 import WhatsminerV3Miner

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")]

# Power moves at once; a reboot and a bmminer restart are short; hashboards boot at once unless
# a test asks for a boot delay.
FAST = {"ramp_watts_per_s": 1e6, "reboot_s": 0.3, "wake_boot_s": 0.0}
# A Whatsminer v3 read is five connections and a web read several: looser than the other
# firmwares' 0.3 s, so a loaded machine does not turn a slow answer into a failure.
TEST_DEADLINES = Deadlines(call_s=1.0, confirm_s=1.0, poll_s=0.02)


@dataclass(frozen=True, slots=True)
class Kind:
    firmware: str  # the driver's name for it
    simulator: type[SimulatedMiner]
    model: str
    subnet: str
    control: PowerControl
    reads_watts: bool
    web: bool  # listens on port 80
    # How a refused command comes out, per command (pyasic discards some firmwares' answers).
    refused: dict[str, Failure] = field(default_factory=dict)
    options: dict[str, float] = field(default_factory=dict)

    def build(self, n: int = 1, **options: float) -> SimulatedMiner:
        return self.simulator(f"{self.subnet}.{n}", SPECS[self.model], seed=n, **{**FAST, **self.options, **options})


KINDS = (
    Kind(
        "antminer",
        AntminerMiner,
        "Antminer S21",
        "127.0.140",
        PowerControl.ON_OFF,
        reads_watts=False,
        web=True,
        refused={"sleep": Failure.IGNORED, "wake": Failure.IGNORED},
        options={"restart_s": 0.0},
    ),
    Kind(
        "vnish",
        VNishMiner,
        "Antminer S21",
        "127.0.141",
        PowerControl.ON_OFF,
        reads_watts=True,
        web=True,
        refused={"sleep": Failure.REFUSED, "wake": Failure.REFUSED},
    ),
    Kind(
        "whatsminer",
        WhatsminerV3Miner,
        "Whatsminer M60S",
        "127.0.142",
        PowerControl.WATTS,
        reads_watts=True,
        web=False,
        refused={"set_power_limit": Failure.IGNORED, "sleep": Failure.REFUSED, "wake": Failure.REFUSED},
    ),
)


@pytest.fixture(
    params=[pytest.param(k, marks=needs_port_80 if k.web else ()) for k in KINDS],
    ids=lambda kind: kind.simulator.firmware,
)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def sim(kind: Kind) -> AsyncIterator[SimulatedMiner]:
    miner = kind.build()
    await miner.start()
    try:
        yield miner
    finally:
        await miner.stop()
        await collect_pyasic_leftovers()


async def open_driver(sim: SimulatedMiner, deadlines: Deadlines = TEST_DEADLINES) -> PyasicMiner:
    fleet = MinerFleet([MinerTarget(sim.host)], FleetSettings(deadlines=deadlines))
    driver = (await fleet.discover())[sim.host]
    assert isinstance(driver, PyasicMiner), driver
    return driver


@pytest.fixture
async def driver(sim: SimulatedMiner) -> PyasicMiner:
    return await open_driver(sim)


# -- identification ---------------------------------------------------------------------------


async def test_identified_alike_automatically_and_by_hint(kind: Kind) -> None:
    sims = [kind.build(n) for n in (10, 11, 12)]
    await asyncio.gather(*(s.start() for s in sims))
    try:
        auto, hinted, unmodelled = sims
        fleet = MinerFleet(
            [
                MinerTarget(auto.host),
                MinerTarget(hinted.host, firmware=kind.firmware, model=kind.model),
                MinerTarget(unmodelled.host, firmware=kind.firmware),
            ],
            FleetSettings(deadlines=TEST_DEADLINES),
        )
        found = await fleet.discover()
        drivers = [found[s.host] for s in sims]
        assert all(isinstance(d, PyasicMiner) for d in drivers), drivers
        described = {(d.firmware, d.model, d.capability) for d in drivers if isinstance(d, PyasicMiner)}
        assert len(described) == 1, described
        ((firmware, model, capability),) = described
        assert firmware == kind.firmware and model is not None and kind.model.split()[-1] in model
        assert capability.control is kind.control
        spec = SPECS[kind.model]
        assert (capability.min_watts, capability.max_watts) == (spec.min_watts, spec.max_watts)
        assert len(auto.commands_received) > len(hinted.commands_received)  # the hint skipped the race
    finally:
        await asyncio.gather(*(s.stop() for s in sims))
        await collect_pyasic_leftovers()


# -- reading ----------------------------------------------------------------------------------


async def test_read_reports_the_physics(kind: Kind, sim: SimulatedMiner, driver: PyasicMiner) -> None:
    reading = await driver.read()
    physics = sim.physics
    assert reading.firmware == kind.firmware and reading.device_id == sim.host
    if kind.reads_watts:
        assert reading.watts == pytest.approx(physics.power_watts(), abs=1.0)
        assert reading.limit_watts == pytest.approx(physics.target_watts, abs=1.0)
    else:
        assert reading.watts is None and reading.limit_watts is None  # stock firmware reports no power
    assert reading.hashrate_ths == pytest.approx(physics.hashrate_ths(), rel=0.01)
    assert reading.mining is True
    assert len(reading.temperatures_c) == sim.spec.hashboards
    assert all(physics.ambient_c < t < 120 for t in reading.temperatures_c)
    assert reading.fans_rpm and all(rpm > 0 for rpm in reading.fans_rpm)


# -- control ----------------------------------------------------------------------------------


async def test_power_target_where_the_firmware_has_one(kind: Kind, sim: SimulatedMiner, driver: PyasicMiner) -> None:
    if kind.control is PowerControl.WATTS:
        assert await driver.set_power_limit(3000) == 3000
        assert sim.physics.target_watts == 3000
        assert (await driver.read()).limit_watts == 3000
        return
    with pytest.raises(DeviceError) as caught:
        await driver.set_power_limit(3000)
    assert caught.value.failure is Failure.UNSUPPORTED
    assert sim.physics.target_watts == sim.spec.nominal_watts


@needs_port_80
async def test_pyasic_cannot_set_a_vnish_preset_even_a_tuned_one() -> None:
    # Why VNish is on/off here: pyasic 0.79.0 returns False before sending anything.
    async with KINDS[1].build(20) as sim:
        assert isinstance(sim, VNishMiner)
        factory = import_pyasic().miners.factory
        miner = factory.MINER_CLASSES[factory.MinerTypes.VNISH]["ANTMINER S21"](sim.host)
        tuned = max(p.watts for p in sim.presets if p.tuned and p.watts < 3500)
        assert await miner.set_power_limit(tuned) is False
        assert "POST /api/v1/settings" not in sim.commands_received
        assert sim.physics.target_watts == 3500
    await collect_pyasic_leftovers()


async def test_sleep_then_wake(sim: SimulatedMiner, driver: PyasicMiner) -> None:
    await driver.sleep()
    assert sim.physics.sleeping
    asleep = await driver.read()
    assert asleep.mining is False and asleep.hashrate_ths == 0
    await driver.wake()
    assert not sim.physics.sleeping
    awake = await driver.read()
    assert awake.mining is True and awake.hashrate_ths and awake.hashrate_ths > 0


async def test_a_wake_boots_the_hashboards_before_they_hash(kind: Kind) -> None:
    async with kind.build(21, wake_boot_s=1.5) as sim:
        sim.physics.sleep(settled=True)
        driver = await open_driver(sim, Deadlines(call_s=1.0, confirm_s=3.0, poll_s=0.02))
        await driver.wake()  # confirmed by the firmware's word or the climbing draw, not by hashing
        assert sim.physics.booting
        booting = await driver.read()
        assert booting.hashrate_ths == 0  # the boards are still booting
        if kind.reads_watts:
            assert booting.watts is not None
            assert sim.spec.sleep_watts < booting.watts < sim.physics.target_watts  # drawing more, not all
        for _ in range(100):
            if (await driver.read()).hashrate_ths:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # past the last of the ramp
        expected = sim.spec.hashrate_at(sim.physics.target_watts)
        assert (await driver.read()).hashrate_ths == pytest.approx(expected, rel=0.01)
    await collect_pyasic_leftovers()


@needs_port_80
async def test_a_stock_antminer_restarts_bmminer_on_a_mode_change() -> None:
    async with KINDS[0].build(22, restart_s=0.5) as sim:
        assert isinstance(sim, AntminerMiner)
        factory = import_pyasic().miners.factory
        miner = factory.MINER_CLASSES[factory.MinerTypes.ANTMINER]["ANTMINER S21"](sim.host)
        assert await miner.stop_mining() is True
        assert sim.restarts == 1 and sim.physics.sleeping
        during = await miner.get_data(include=["hashrate", "is_mining"])
        assert during.hashrate is None  # 4028 is away while bmminer restarts ...
        assert during.is_mining is False  # ... the web API is not
        await asyncio.sleep(0.6)
        after = await miner.get_data(include=["hashrate", "is_mining"])
        assert after.hashrate is not None and float(after.hashrate) == 0.0
    await collect_pyasic_leftovers()


@needs_port_80
async def test_the_driver_sleeps_and_wakes_a_stock_antminer_through_the_restarts() -> None:
    # The read-back works while bmminer is away: the web API tells the mode and the per-board
    # hashrates (pyasic sums them when 4028 gives no total).
    async with KINDS[0].build(23, restart_s=1.0) as sim:
        assert isinstance(sim, AntminerMiner)
        driver = await open_driver(sim)
        await driver.sleep()
        assert sim.physics.sleeping and sim.restarting
        await driver.wake()
        assert not sim.physics.sleeping and sim.restarts == 2
        assert (await driver.read()).mining is True
    await collect_pyasic_leftovers()


# -- faults -----------------------------------------------------------------------------------

OPERATIONS = ("read", "set_power_limit", "sleep", "wake")
TRANSPORT_FAULTS = {Fault.NO_ANSWER: Failure.NO_ANSWER, Fault.HANG: Failure.TIMEOUT, Fault.GARBAGE: Failure.GARBAGE}


def expected_failure(kind: Kind, fault: Fault, operation: str) -> Failure | None:
    if operation == "set_power_limit" and kind.control is PowerControl.ON_OFF:
        return Failure.UNSUPPORTED  # refused by the driver before the miner is asked
    if fault in TRANSPORT_FAULTS:
        return TRANSPORT_FAULTS[fault]
    if operation == "read":
        return None
    if fault is Fault.REFUSE:
        return kind.refused[operation]
    return Failure.IGNORED


async def operate(driver: PyasicMiner, operation: str) -> object:
    if operation == "set_power_limit":
        return await driver.set_power_limit(driver.capability.min_watts)
    return await getattr(driver, operation)()


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("fault", [f for f in Fault if f is not Fault.NONE], ids=str)
async def test_each_fault_is_classified(
    kind: Kind, sim: SimulatedMiner, driver: PyasicMiner, fault: Fault, operation: str
) -> None:
    if operation == "wake":
        sim.physics.sleep()  # so that waking would change something
    before = (sim.physics.sleeping, sim.physics.target_watts)
    sim.set_fault(fault)
    expected = expected_failure(kind, fault, operation)
    if expected is None:
        assert isinstance(await operate(driver, operation), MinerReading)
    else:
        with pytest.raises(DeviceError) as caught:
            await operate(driver, operation)
        assert caught.value.failure is expected, caught.value.detail
    assert (sim.physics.sleeping, sim.physics.target_watts) == before, "a faulty miner changed state"


async def test_a_reboot_is_no_answer_then_a_miner_again(kind: Kind, sim: SimulatedMiner, driver: PyasicMiner) -> None:
    sim.physics.reboot()
    with pytest.raises(DeviceError) as caught:
        await driver.read()
    assert caught.value.failure is Failure.NO_ANSWER, caught.value.detail
    await asyncio.sleep(sim.physics.reboot_s + 0.1)
    assert (await driver.read()).mining is True


# -- through the daemon's actuator ----------------------------------------------------------------


async def _step(driver: PyasicMiner, action: Action, watts: float = 0.0) -> StepResult:
    step = Step(driver.device_id, "site", action, watts, 0.0, watts, "test")
    [result] = await execute([step], {driver.device_id: driver}.get, concurrency=4, timeout_seconds=10.0)
    return result


async def test_the_actuator_sleeps_wakes_and_sets_power_where_the_firmware_has_it(
    kind: Kind, sim: SimulatedMiner, driver: PyasicMiner
) -> None:
    if kind.control is PowerControl.WATTS:
        limited = await _step(driver, Action.SET_LIMIT, driver.capability.min_watts + 200)
        assert limited.ok, limited.detail
        assert sim.physics.target_watts == pytest.approx(limited.held_watts)
    slept = await _step(driver, Action.SLEEP)
    assert slept.ok, slept.detail
    assert sim.physics.sleeping
    # An on/off miner is woken with resume alone, at its one setting (issue 11, item 1).
    wanted = driver.capability.max_watts if kind.control is PowerControl.ON_OFF else driver.capability.min_watts + 100
    woken = await _step(driver, Action.WAKE, wanted)
    assert woken.ok, woken.detail
    assert sim.physics.mining and not sim.physics.sleeping
    assert woken.held_watts == pytest.approx(driver.capability.achievable_watts(wanted))


async def test_a_wake_the_firmware_ignores_comes_back_from_the_actuator_as_ignored(
    kind: Kind, sim: SimulatedMiner, driver: PyasicMiner
) -> None:
    sim.physics.sleep(settled=True)
    sim.set_fault(Fault.IGNORE)
    result = await _step(driver, Action.WAKE, driver.capability.max_watts)
    assert result.failure is Failure.IGNORED, result.detail
    assert result.held_watts is None and sim.physics.sleeping
