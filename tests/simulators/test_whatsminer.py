"""The Whatsminer simulator, driven by the real pyasic 0.79.0 client over real sockets.

Each test owns one loopback address in 127.0.3.x (pyasic's ports are fixed). Time is a manual
clock, so power ramps, cooling, reboots and token lifetimes move only when a test says so.
Failure tests assert what pyasic *actually* does with each fault, which is the contract a
driver has to cope with (it differs by fault: an exception, False, True, or all-None data).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pyasic
import pytest
from pyasic.errors import APIError
from pyasic.miners.backends.btminer import BTMinerV2, BTMinerV3

from wattshift.model.specs import SPECS, MinerSpec
from wattshift.simulators.miner import Fault
from wattshift.simulators.whatsminer import WhatsminerMiner
from wattshift.simulators.whatsminer_auth import MAX_LIVE_TOKENS, TOKEN_LIFETIME_S
from wattshift.simulators.whatsminer_replies import Readings

# pyasic's token code calls passlib's md5_crypt.hash(word, salt=...), which passlib deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"
)

M50S = SPECS["Whatsminer M50S"]
IDENTIFY_TIMEOUT_S = 4.0  # pyasic's own budget is 3 s
CALL_TIMEOUT_S = 2.0
HANG_TIMEOUT_S = 0.3
READ = {"exclude": ["config"]}


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StartSimulator = Callable[..., Awaitable[WhatsminerMiner]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def start_simulator(clock: ManualClock) -> AsyncIterator[StartSimulator]:
    started: list[WhatsminerMiner] = []

    async def start(host: str, spec: MinerSpec = M50S, **options: Any) -> WhatsminerMiner:
        simulator = WhatsminerMiner(host, spec, clock=clock, seed=7, **options)
        await simulator.start()
        started.append(simulator)
        return simulator

    try:
        yield start
    finally:
        for simulator in started:
            await simulator.stop()


async def identify(host: str) -> BTMinerV2:
    miner = await asyncio.wait_for(pyasic.get_miner(host), IDENTIFY_TIMEOUT_S)
    assert isinstance(miner, BTMinerV2), f"{host}: pyasic identified {miner!r}"
    return miner


async def read(miner: BTMinerV2) -> pyasic.MinerData:
    return await asyncio.wait_for(miner.get_data(**READ), CALL_TIMEOUT_S)


# -- identification and readings --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "spec_name", "class_name"),
    [
        ("127.0.3.10", "Whatsminer M50S", "BTMinerM50SVH30"),
        ("127.0.3.11", "Whatsminer M60S", "BTMinerM60SVK10"),
        ("127.0.3.12", "Whatsminer M30S+", "BTMinerM30SPlusV10"),
    ],
)
async def test_get_miner_identifies_the_model_class_on_the_api_v2_backend(
    start_simulator: StartSimulator, host: str, spec_name: str, class_name: str
) -> None:
    simulator = await start_simulator(host, SPECS[spec_name])

    miner = await identify(host)

    assert type(miner).__name__ == class_name
    # The firmware version from get_version (before 2024.11) is what keeps pyasic off API v3.
    assert not isinstance(miner, BTMinerV3)
    assert miner.expected_hashboards == SPECS[spec_name].hashboards
    assert {"devdetails", "get_version"} <= set(simulator.commands_received)


async def test_get_data_reports_the_physics(start_simulator: StartSimulator, clock: ManualClock) -> None:
    simulator = await start_simulator("127.0.3.12")
    clock.advance(90)
    miner = await identify("127.0.3.12")

    data = await read(miner)

    physics = simulator.physics
    assert data.wattage == round(physics.power_watts()) == 3276
    assert data.wattage_limit == round(physics.target_watts)
    assert float(data.hashrate) == pytest.approx(physics.hashrate_ths(), rel=1e-6)
    assert float(data.expected_hashrate) == pytest.approx(M50S.nominal_ths)
    assert data.uptime == physics.uptime_s() == 90
    assert data.is_mining is True
    assert data.env_temp == physics.ambient_c
    assert data.temperature_avg == round(physics.temperature_c())
    assert [board.chips for board in data.hashboards] == [156, 156, 156]
    assert sum(float(board.hashrate) for board in data.hashboards) == pytest.approx(
        physics.hashrate_ths(), rel=1e-6
    )
    assert [fan.speed for fan in data.fans] == [Readings.of(physics).fan_rpm] * 2
    assert data.mac == simulator.mac
    assert data.serial_number == simulator.serial


# -- control ------------------------------------------------------------------------------------


async def test_set_power_limit_moves_the_target_and_reads_back(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.13")
    miner = await identify("127.0.3.13")

    assert await miner.set_power_limit(2600) is True
    assert simulator.physics.target_watts == 2600
    clock.advance(5)  # the ramp covers 676 W in a bit over a second
    data = await read(miner)

    assert data.wattage_limit == 2600
    assert data.wattage == 2600
    assert float(data.hashrate) == pytest.approx(M50S.hashrate_at(2600), rel=1e-6)
    assert "adjust_power_limit" in simulator.commands_received


async def test_set_power_limit_outside_the_range_says_true_and_applies_the_clamped_value(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator("127.0.3.14")
    miner = await identify("127.0.3.14")

    assert await miner.set_power_limit(1000) is True  # True although 1000 W was not applied

    assert (await read(miner)).wattage_limit == M50S.min_watts
    # 99999 is the firmware's "remove the limit": back to the factory target.
    assert await miner.set_power_limit(99_999) is True
    assert simulator.physics.target_watts == M50S.nominal_watts


async def test_stop_and_resume_mining_sleep_and_wake_the_machine(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.15")
    miner = await identify("127.0.3.15")
    fans_mining = (await read(miner)).fans[0].speed

    assert await miner.stop_mining() is True
    assert simulator.physics.sleeping
    clock.advance(600)  # ten time constants: the boards cool down to ambient
    asleep = await read(miner)

    assert asleep.is_mining is False
    assert asleep.wattage == round(M50S.sleep_watts)
    assert float(asleep.hashrate) == 0.0
    assert asleep.fans[0].speed < fans_mining

    assert await miner.resume_mining() is True
    clock.advance(10)
    awake = await read(miner)

    assert awake.is_mining is True
    assert awake.wattage == M50S.nominal_watts
    assert simulator.commands_received.count("power_off") == 1
    assert simulator.commands_received.count("power_on") == 1


async def test_a_wake_boots_the_boards_while_the_firmware_says_it_is_on(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.16", wake_boot_s=90.0)
    miner = await identify("127.0.3.16")
    assert await miner.stop_mining() is True
    clock.advance(60)
    assert await miner.resume_mining() is True
    clock.advance(60)
    booting = await read(miner)
    # mineroff is false at once: pyasic says mining; the boards draw little and hash nothing.
    assert booting.is_mining is True and float(booting.hashrate) == 0.0
    assert booting.wattage == round(simulator.physics.boot_watts())
    clock.advance(30 + 10)
    assert (await read(miner)).wattage == M50S.nominal_watts


async def test_firmware_without_power_limiting_reads_zero_and_refuses_a_limit(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.17", SPECS["Whatsminer M30S+"])
    simulator.power_limit_supported = False
    miner = await identify("127.0.3.17")
    assert (await read(miner)).wattage_limit == 0
    # adjust_power_limit is answered as an invalid command, which pyasic turns into False.
    assert await miner.set_power_limit(2000) is False
    assert simulator.physics.target_watts == SPECS["Whatsminer M30S+"].nominal_watts


async def test_reboot_drops_the_miner_off_the_network_until_it_has_booted(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.16", reboot_s=30.0)
    miner = await identify("127.0.3.16")
    assert await miner.set_power_limit(2500) is True

    assert await miner.reboot() is True
    assert simulator.physics.rebooting
    # While it boots the simulator resets connections; pyasic's Whatsminer backend then raises
    # instead of returning empty data, and get_miner finds nothing.
    with pytest.raises(ConnectionError):
        await read(miner)
    assert await asyncio.wait_for(pyasic.get_miner("127.0.3.16"), IDENTIFY_TIMEOUT_S) is None

    clock.advance(31)
    booted = await read(await identify("127.0.3.16"))

    assert booted.is_mining is True
    assert booted.uptime == 1
    assert booted.wattage_limit == M50S.nominal_watts  # the limit did not survive the reboot
    assert booted.wattage == round(simulator.physics.power_watts())


async def test_a_reboot_voids_the_token_pyasic_keeps_for_thirty_minutes(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.17", reboot_s=30.0)
    miner = await identify("127.0.3.17")
    assert await miner.reboot() is True
    clock.advance(31)

    assert await miner.set_power_limit(2500) is False  # cached token: "check token err"
    assert simulator.physics.target_watts == M50S.nominal_watts

    miner.rpc.token = None  # what a driver must do after a reboot (or build a new miner object)
    assert await miner.set_power_limit(2500) is True
    assert simulator.physics.target_watts == 2500


# -- authentication -------------------------------------------------------------------------------


async def test_only_the_right_password_changes_the_machine(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.18", password="s3cret")
    miner = await identify("127.0.3.18")

    # pyasic's default password is "admin": every write is turned away at the token check.
    assert await miner.set_power_limit(2500) is False
    assert await miner.stop_mining() is False
    assert simulator.physics.target_watts == M50S.nominal_watts
    assert not simulator.physics.sleeping
    assert "adjust_power_limit" not in simulator.commands_received

    miner.rpc.pwd = "s3cret"
    miner.rpc.token = None
    assert await miner.set_power_limit(2500) is True
    assert simulator.physics.target_watts == 2500


async def test_a_write_sent_in_plaintext_is_denied(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.19")
    miner = await identify("127.0.3.19")

    with pytest.raises(APIError, match="permission denied"):
        await miner.rpc.send_command("power_off")

    assert not simulator.physics.sleeping


async def test_tokens_run_out_at_the_limit_and_come_back_when_they_expire(
    start_simulator: StartSimulator, clock: ManualClock
) -> None:
    simulator = await start_simulator("127.0.3.20")
    miner = await identify("127.0.3.20")
    for _ in range(MAX_LIVE_TOKENS):  # e.g. a driver that builds a new miner object per command
        miner.rpc.token = None
        await miner.rpc.get_token()

    miner.rpc.token = None
    assert await miner.set_power_limit(2500) is False  # get_token: "token over max times"
    assert simulator.physics.target_watts == M50S.nominal_watts

    clock.advance(TOKEN_LIFETIME_S + 1)
    assert await miner.set_power_limit(2500) is True
    assert simulator.physics.target_watts == 2500


# -- faults, as pyasic sees them ----------------------------------------------------------------


async def test_no_answer_raises_from_get_data_and_stop_mining(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.21")
    miner = await identify("127.0.3.21")
    simulator.set_fault(Fault.NO_ANSWER)

    # A reset connection escapes pyasic as ConnectionResetError (from writer.wait_closed()).
    with pytest.raises(ConnectionError):
        await read(miner)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(miner.stop_mining(), CALL_TIMEOUT_S)
    assert await asyncio.wait_for(miner.set_power_limit(2500), CALL_TIMEOUT_S) is False
    assert await asyncio.wait_for(pyasic.get_miner("127.0.3.21"), IDENTIFY_TIMEOUT_S) is None
    assert simulator.physics.target_watts == M50S.nominal_watts
    assert not simulator.physics.sleeping


async def test_a_closed_port_gives_empty_data_and_a_false_success(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.22")
    miner = await identify("127.0.3.22")
    assert await miner.set_power_limit(3000) is True  # pyasic now holds a token
    await simulator.stop()

    data = await read(miner)
    # Connection refused reads as "{}": every field None and is_mining False (DESIGN.md, 5).
    assert (data.wattage, data.wattage_limit, data.hashrate, data.uptime) == (None, None, None, None)
    assert data.is_mining is False
    # ...and "{}" passes pyasic's validation, so with a cached token this reports success.
    assert await miner.set_power_limit(2500) is True
    assert simulator.physics.target_watts == 3000


# pyasic's _send_bytes never closes its socket when a caller's timeout cancels it mid-read.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
)
async def test_hang_needs_the_callers_own_timeout(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.23")
    miner = await identify("127.0.3.23")
    simulator.set_fault(Fault.HANG)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(miner.get_data(**READ), HANG_TIMEOUT_S)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(miner.set_power_limit(2500), HANG_TIMEOUT_S)
    # pyasic's rpc.reboot() swallows the cancellation, so the outer timeout returns False.
    assert await asyncio.wait_for(miner.reboot(), HANG_TIMEOUT_S) is False
    assert simulator.physics.target_watts == M50S.nominal_watts
    assert not simulator.physics.rebooting
    gc.collect()  # reap pyasic's abandoned sockets while the filter above still applies


async def test_garbage_gives_empty_data_and_breaks_identification(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.24")
    miner = await identify("127.0.3.24")
    simulator.set_fault(Fault.GARBAGE)

    data = await read(miner)
    assert (data.wattage, data.wattage_limit, data.hashrate, data.uptime) == (None, None, None, None)
    assert data.is_mining is False
    assert await asyncio.wait_for(miner.set_power_limit(2500), CALL_TIMEOUT_S) is False
    assert await asyncio.wait_for(miner.stop_mining(), CALL_TIMEOUT_S) is False
    # The factory's socket probe decodes the bytes as UTF-8 without catching the error.
    with pytest.raises(UnicodeDecodeError):
        await asyncio.wait_for(pyasic.get_miner("127.0.3.24"), IDENTIFY_TIMEOUT_S)
    assert simulator.physics.target_watts == M50S.nominal_watts


async def test_refuse_turns_every_control_call_false_and_reads_still_work(
    start_simulator: StartSimulator,
) -> None:
    simulator = await start_simulator("127.0.3.25")
    miner = await identify("127.0.3.25")
    simulator.set_fault(Fault.REFUSE)

    assert await miner.set_power_limit(2500) is False
    assert await miner.stop_mining() is False
    assert await miner.resume_mining() is False
    assert await miner.reboot() is False

    data = await read(miner)
    assert data.wattage_limit == M50S.nominal_watts
    assert data.is_mining is True
    assert {"adjust_power_limit", "power_off", "power_on", "reboot"} <= set(simulator.commands_received)


async def test_ignore_says_ok_and_only_a_read_back_tells(start_simulator: StartSimulator) -> None:
    simulator = await start_simulator("127.0.3.26")
    miner = await identify("127.0.3.26")
    simulator.set_fault(Fault.IGNORE)

    assert await miner.set_power_limit(2500) is True
    assert await miner.stop_mining() is True

    data = await read(miner)
    assert data.wattage_limit == M50S.nominal_watts
    assert data.is_mining is True
    assert simulator.physics.target_watts == M50S.nominal_watts
    assert not simulator.physics.sleeping
