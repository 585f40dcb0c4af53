"""The LuxOS simulator, driven by pyasic 0.79.0's real LUXMiner client over real sockets.

Each test starts its own simulated miner on a 127.0.2.x address (LuxOS's range). The physics
runs on a manual clock, so every number read over the wire can be compared exactly with the
simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pyasic
import pytest
from pyasic.errors import APIError

from wattshift.model.specs import SPECS
from wattshift.simulators.luxos import LuxOSMiner, build_profiles
from wattshift.simulators.miner import Fault

S21 = SPECS["Antminer S21"]
HOST = "127.0.2.1"
REBOOT_S = 5.0
HANG_DEADLINE_S = 0.3


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[LuxOSMiner]:
    miner = LuxOSMiner(HOST, S21, clock=clock, reboot_s=REBOOT_S)
    await miner.start()
    try:
        yield miner
    finally:
        await miner.stop()


@pytest.fixture
async def client(sim: LuxOSMiner) -> Any:
    miner = await pyasic.get_miner(sim.host)
    assert miner is not None, "pyasic did not identify the simulator"
    return miner


async def read(client: Any, *items: str) -> Any:
    return await client.get_data(include=list(items) or None, exclude=["config"])


# -- identification and telemetry -----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "pyasic_class"),
    [("Antminer S21", "LUXMinerS21"), ("Antminer S19 XP", "LUXMinerS19XP"), ("Antminer S21 Pro", "LUXMinerS21Pro")],
)
async def test_get_miner_identifies_luxos_and_the_model(model: str, pyasic_class: str) -> None:
    async with LuxOSMiner("127.0.2.2", SPECS[model]):
        miner = await pyasic.get_miner("127.0.2.2")
    assert type(miner).__name__ == pyasic_class
    assert str(miner.firmware) == "LuxOS"


def test_luxos_refuses_a_whatsminer_spec() -> None:
    with pytest.raises(ValueError, match="Antminers only"):
        LuxOSMiner("127.0.2.3", SPECS["Whatsminer M50S"])


async def test_get_data_reports_the_physics(sim: LuxOSMiner, client: Any, clock: ManualClock) -> None:
    clock.advance(120.0)
    data = await read(client)
    physics = sim.physics
    assert data.wattage == round(physics.power_watts()) == 3500
    assert data.wattage_limit == 3500  # the "default" profile
    assert float(data.hashrate) == pytest.approx(physics.hashrate_ths(), rel=1e-3)
    per_board = [float(board.hashrate) for board in data.hashboards]
    assert per_board == pytest.approx([physics.hashrate_ths() / 3] * 3, rel=1e-3)
    assert {board.temp for board in data.hashboards} == {round(physics.temperature_c())}
    assert all(board.chip_temp > board.temp for board in data.hashboards)
    assert data.uptime == 120
    assert len(data.fans) == S21.fans and all(fan.speed > 0 for fan in data.fans)
    assert data.is_mining is True


async def test_profiles_span_the_models_power_range(sim: LuxOSMiner, client: Any) -> None:
    config = await client.get_config()
    presets = {preset.name: preset.power for preset in config.mining_mode.available_presets}
    assert presets == {profile.name: profile.watts for profile in build_profiles(S21)}
    assert min(presets.values()) >= S21.min_watts and max(presets.values()) <= S21.max_watts
    assert presets["default"] == S21.nominal_watts
    assert config.mining_mode.active_preset.name == "default"


# -- control ----------------------------------------------------------------------------------


async def test_set_power_limit_snaps_down_to_a_profile_and_restores_atm(
    sim: LuxOSMiner, client: Any, clock: ManualClock
) -> None:
    assert await client.set_power_limit(3000) is True
    assert (await read(client, "wattage_limit")).wattage_limit == 2962  # 460MHz, the highest <= 3000
    assert sim.physics.target_watts == 2962
    clock.advance(10.0)
    assert (await read(client, "wattage")).wattage == 2962
    # pyasic turned ATM off around profileset, and back on.
    privileged = [c for c in sim.commands_received if c in {"atmset", "profileset"}]
    assert privileged == ["atmset", "profileset", "atmset"]
    assert sim.atm_enabled is True


async def test_set_power_limit_below_the_lowest_profile_changes_nothing(sim: LuxOSMiner, client: Any) -> None:
    assert await client.set_power_limit(1000) is False
    assert sim.active_profile.name == "default"
    assert "profileset" not in sim.commands_received


async def test_profileset_is_refused_while_atm_is_on(sim: LuxOSMiner, client: Any) -> None:
    with pytest.raises(APIError, match="ATM"):
        await client.rpc.profileset("400MHz")
    assert sim.active_profile.name == "default"


async def test_sleep_cuts_power_but_pyasic_still_says_mining(
    sim: LuxOSMiner, client: Any, clock: ManualClock
) -> None:
    assert await client.stop_mining() is True
    clock.advance(10.0)  # the boards wind down on the ramp
    data = await read(client, "wattage", "hashrate", "hashboards", "is_mining")
    assert sim.physics.sleeping
    assert data.wattage == S21.sleep_watts
    assert float(data.hashrate) == 0.0
    # pyasic has no is_mining for LuxOS: the default True stays (DESIGN.md, section 5).
    assert data.is_mining is True


async def test_wake_ramps_back_to_the_profile(sim: LuxOSMiner, client: Any, clock: ManualClock) -> None:
    assert await client.stop_mining() is True
    assert await client.resume_mining() is True
    assert not sim.physics.sleeping
    clock.advance(30.0)
    assert (await read(client, "wattage")).wattage == 3500


async def test_reboot_drops_off_the_network_then_comes_back(sim: LuxOSMiner, client: Any, clock: ManualClock) -> None:
    assert await client.reboot() is True
    assert sim.physics.rebooting
    with pytest.raises(ConnectionResetError):
        await client.rpc.version()
    assert await pyasic.get_miner(sim.host) is None
    clock.advance(REBOOT_S + 60.0)
    data = await read(client, "wattage", "uptime")
    assert data.wattage == 3500 and data.uptime == 60


async def test_a_reboot_ends_the_session_pyasic_still_holds(sim: LuxOSMiner, client: Any, clock: ManualClock) -> None:
    assert await client.stop_mining() is True
    stale = client.rpc.session_token
    assert await client.reboot() is True
    clock.advance(REBOOT_S + 1.0)
    assert client.rpc.session_token == stale  # pyasic never re-authenticates on its own...
    assert await client.resume_mining() is False  # ...so LuxOS rejects the old session id
    client.rpc.session_token = None
    assert await client.stop_mining() is True
    assert sim.physics.sleeping


# -- sessions ---------------------------------------------------------------------------------


async def test_privileged_commands_need_the_session_id(sim: LuxOSMiner, client: Any) -> None:
    with pytest.raises(APIError, match="Missing session id"):
        await client.rpc.send_command("curtail")
    with pytest.raises(APIError, match="Invalid session id"):
        await client.rpc.send_command("curtail", "not-a-session", "sleep")
    assert not sim.physics.sleeping


async def test_one_session_at_a_time(sim: LuxOSMiner, client: Any) -> None:
    first = await client.rpc.logon()
    with pytest.raises(APIError, match="Another session is active"):
        await client.rpc.logon()
    session = await client.rpc.session()
    assert session["SESSION"][0]["SessionID"] == first["SESSION"][0]["SessionID"] == sim.session_id


# -- faults -----------------------------------------------------------------------------------


async def test_no_answer_hides_the_miner(sim: LuxOSMiner, client: Any) -> None:
    sim.set_fault(Fault.NO_ANSWER)
    assert await pyasic.get_miner(sim.host) is None
    with pytest.raises(ConnectionResetError):
        await client.get_data(exclude=["config"])


# When a deadline cancels a pyasic call, pyasic drops its socket without closing it, and the
# stream's finaliser warns. The socket is closed all the same; the warning is pyasic's.
@pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")
async def test_hang_never_answers(sim: LuxOSMiner, client: Any) -> None:
    sim.set_fault(Fault.HANG)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.get_data(exclude=["config"]), HANG_DEADLINE_S)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.stop_mining(), HANG_DEADLINE_S)
    assert not sim.physics.sleeping


async def test_garbage_reads_as_no_data(sim: LuxOSMiner, client: Any) -> None:
    sim.set_fault(Fault.GARBAGE)
    data = await client.get_data(exclude=["config"])
    # pyasic swallows the decode errors: every field is simply missing.
    assert (data.wattage, data.wattage_limit, data.hashrate) == (None, None, None)
    # ...but identification does not: bytes that are not UTF-8 escape get_miner.
    with pytest.raises(UnicodeDecodeError):
        await pyasic.get_miner(sim.host)
    # pyasic's second probe fails the same way and nobody retrieves its exception; collect the
    # orphaned task now, so asyncio's "never retrieved" report happens inside this test.
    await asyncio.sleep(0.05)
    gc.collect()


async def test_refuse_answers_errors_and_changes_nothing(sim: LuxOSMiner, client: Any) -> None:
    sim.set_fault(Fault.REFUSE)
    assert await client.stop_mining() is False
    with pytest.raises(APIError, match="refused"):
        await client.set_power_limit(3000)
    assert not sim.physics.sleeping and sim.physics.target_watts == 3500
    assert (await read(client, "wattage")).wattage == 3500  # reads still work


async def test_ignore_says_ok_and_changes_nothing(sim: LuxOSMiner, client: Any) -> None:
    sim.set_fault(Fault.IGNORE)
    assert await client.stop_mining() is True
    # profileset answers success and echoes the profile it still holds, so pyasic says False:
    # the driver must call that IGNORED (it said OK), not REFUSED.
    assert await client.set_power_limit(3000) is False
    assert "profileset" in sim.commands_received
    assert not sim.physics.sleeping
    data = await read(client, "wattage", "wattage_limit")
    assert (data.wattage, data.wattage_limit) == (3500, 3500)
