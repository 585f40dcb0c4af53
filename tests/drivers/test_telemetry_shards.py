"""Telemetry through worker processes (drivers/telemetry_shards.py, telemetry_worker.py, telemetry_wire.py).

The simulators run in this test's process on loopback; each worker is a real process running the
real pyasic fleet against them over real sockets. What is checked: the same readings as the fleet
polling in its own process; commands still going from the daemon; a worker killed or hung seen,
its miners failing while it is down and read again once it is back; no process left after close.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from simulated_miners import FAST_PHYSICS, SIM_KINDS, SimKind, collect_pyasic_leftovers

from wattshift.daemon.config.site import SiteConfig
from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from wattshift.drivers.pyasic_miner import Deadlines
from wattshift.drivers.telemetry_wire import (
    MAX_FRAME_BYTES,
    MAX_ROW_BYTES,
    Identity,
    ProtocolError,
    decode_result,
    encode_result,
    read_frame,
)
from wattshift.model.miner import CapabilitySource, Failure, MinerCapability, MinerReading, PowerControl
from wattshift.simulators.antminer import AntminerMiner
from wattshift.simulators.luxos import LuxOSMiner
from wattshift.simulators.miner import SimulatedMiner
from wattshift.simulators.vnish import VNishMiner
from wattshift.simulators.whatsminer import WhatsminerMiner

pytestmark = [
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
]

# Every firmware with a lean reader, in subnets of their own (127.0.4x).
KINDS = [
    *(dataclasses.replace(kind, subnet=f"127.0.{41 + i}") for i, kind in enumerate(SIM_KINDS)),
    SimKind("antminer", AntminerMiner, "Antminer S21", "127.0.44", PowerControl.ON_OFF),
    SimKind("vnish", VNishMiner, "Antminer S21", "127.0.45", PowerControl.ON_OFF),
]
NOBODY = "127.0.46.1"  # nothing listens there
# Workers start cold on a loaded machine: deadlines of seconds, not the in-process tests' 0.3 s.
SETTINGS = FleetSettings(deadlines=Deadlines(call_s=5.0, confirm_s=5.0, poll_s=0.05), worker_restart_s=0.5)
UNTIL_S = 90.0  # a ceiling for what must happen eventually, not a measure of how fast


class FrozenClock:
    """Physics that stands still, so two fleets reading one after the other see the same miners."""

    def __call__(self) -> float:
        return 1000.0


@contextlib.asynccontextmanager
async def running(miners: Sequence[SimulatedMiner]) -> AsyncIterator[Sequence[SimulatedMiner]]:
    try:
        await asyncio.gather(*(m.start() for m in miners))
        yield miners
    finally:
        await asyncio.gather(*(m.stop() for m in miners))
        await collect_pyasic_leftovers()


@contextlib.asynccontextmanager
async def sharded(targets: Sequence[MinerTarget], **settings: float) -> AsyncIterator[MinerFleet]:
    """A fleet reading through two workers; on the way out, every worker must be gone."""
    fleet = MinerFleet(targets, dataclasses.replace(SETTINGS, telemetry_workers=2, **settings))
    assert fleet.telemetry is not None
    started: set[int] = set()
    try:
        yield fleet
    finally:
        started.update(pid for pid in fleet.telemetry.worker_pids if pid is not None)
        await fleet.close()
        assert all(pid is None for pid in fleet.telemetry.worker_pids)
        assert [pid for pid in started if alive(pid)] == []


def alive(pid: int) -> bool:
    """Running (a zombie no one has reaped yet has ended: its parent may be gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def luxos(subnet: str, count: int) -> list[LuxOSMiner]:
    kind = KINDS[0]
    return [LuxOSMiner(f"{subnet}.{n}", kind.spec, seed=n, **FAST_PHYSICS) for n in range(1, count + 1)]


async def until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds; the test fails if it has not after UNTIL_S."""
    try:
        async with asyncio.timeout(UNTIL_S):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {UNTIL_S:g} s: {what}")


# -- the same readings ----------------------------------------------------------------------------


async def test_readings_through_two_workers_equal_the_in_process_readings() -> None:
    clock = FrozenClock()
    sims = [k.simulator(k.host(n), k.spec, seed=n, clock=clock, **FAST_PHYSICS) for k in KINDS for n in (1, 2)]
    targets = [*(MinerTarget(s.host) for s in sims), MinerTarget(NOBODY, firmware="luxos", model="Antminer S21")]
    async with running(sims):
        alone = MinerFleet(targets, SETTINGS)
        try:
            async with sharded(targets) as fleet:
                found = await fleet.discover()
                assert all(isinstance(found[s.host], type(fleet.driver(s.host))) for s in sims), found
                assert isinstance(found[NOBODY], DeviceError)
                pids = fleet.telemetry.worker_pids if fleet.telemetry else []
                assert len({pid for pid in pids if pid is not None}) == 2 and os.getpid() not in pids
                here, there = await alone.read_all(), await fleet.read_all()
                for sim in sims:
                    assert isinstance(here[sim.host], MinerReading), here[sim.host]
                    assert there[sim.host] == here[sim.host]
                    # The daemon's own driver, for commands, is the one it would have built itself.
                    ours, theirs = alone.driver(sim.host), fleet.driver(sim.host)
                    assert ours is not None and theirs is not None
                    assert (theirs.firmware, theirs.model, theirs.capability) == (
                        ours.firmware, ours.model, ours.capability)
                    assert Identity.of(theirs.pyasic_miner, theirs.capability) == Identity.of(
                        ours.pyasic_miner, ours.capability)
                lost_here, lost_there = here[NOBODY], there[NOBODY]
                assert isinstance(lost_here, DeviceError) and isinstance(lost_there, DeviceError)
                assert lost_there.failure == lost_here.failure == Failure.NO_ANSWER
                assert fleet.capability(NOBODY) is None
        finally:
            await alone.close()


async def test_commands_go_from_the_daemon_and_the_workers_read_their_effect() -> None:
    braiins = next(k for k in KINDS if k.firmware == "braiins")
    sim = braiins.build(3)
    async with running([sim]), sharded([MinerTarget(sim.host)]) as fleet:
        await fleet.discover()
        driver = fleet.driver(sim.host)
        assert driver is not None and driver.capability.control is PowerControl.WATTS
        before = len(sim.commands_received)
        assert await driver.set_power_limit(2500.0) == 2500.0  # pyasic, from this process
        assert len(sim.commands_received) > before
        reading = (await fleet.read_all())[sim.host]
        assert isinstance(reading, MinerReading) and reading.limit_watts == 2500.0


async def test_a_miner_the_worker_drops_loses_its_driver_here_too() -> None:
    sims = luxos("127.0.47", 2)
    lost: list[str] = []
    async with running(sims), sharded([MinerTarget(s.host) for s in sims], reidentify_after=2) as fleet:
        fleet.on_capability_lost(lost.append)
        await fleet.read_all()
        assert fleet.driver(sims[0].host) is not None
        await sims[0].stop()
        for _ in range(2):
            assert isinstance((await fleet.read_all())[sims[0].host], DeviceError)
        assert lost == [sims[0].host] and fleet.driver(sims[0].host) is None
        assert fleet.driver(sims[1].host) is not None  # the other worker's miner kept its own
        await sims[0].start()
        assert isinstance((await fleet.read_all())[sims[0].host], MinerReading)
        assert fleet.capability(sims[0].host) is not None


async def test_the_site_file_sets_the_workers_and_the_daemon_commands_with_its_credentials() -> None:
    password = "not-the-default"
    sims = [WhatsminerMiner(f"127.0.50.{n}", KINDS[1].spec, password=password, **FAST_PHYSICS) for n in (1, 2)]
    site = SiteConfig.model_validate({
        "name": "test",
        "budget_kw": 10,
        "miners": [{"addresses": ["127.0.50.1-127.0.50.2"], "firmware": "whatsminer", "credentials": "wm"}],
        "drivers": {"telemetry_workers": 2},
        "credentials": {"wm": {"username": "admin", "password": password}},
    })
    async with running(sims):
        fleet = MinerFleet.from_site(site)
        try:
            assert fleet.telemetry is not None
            await fleet.discover()
            assert len({pid for pid in fleet.telemetry.worker_pids if pid is not None}) == 2
            readings = await fleet.read_all()
            assert all(isinstance(readings[s.host], MinerReading) for s in sims), readings
            driver = fleet.driver(sims[1].host)
            assert driver is not None and await driver.set_power_limit(3000) == 3000  # the password, here
        finally:
            await fleet.close()
    assert MinerFleet.from_site(site.model_copy(update={"drivers": site.drivers.model_copy(
        update={"telemetry_workers": 0})})).telemetry is None


# -- a worker that dies or hangs --------------------------------------------------------------------


async def test_a_killed_worker_s_miners_fail_then_read_again_once_it_is_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sims = luxos("127.0.48", 4)
    targets = [MinerTarget(s.host) for s in sims]
    mine, others = [s.host for s in sims[0::2]], [s.host for s in sims[1::2]]  # worker 1: every other
    caplog.set_level(logging.WARNING, logger="wattshift.drivers.telemetry_shards")
    async with running(sims), sharded(targets) as fleet:
        telemetry = fleet.telemetry
        assert telemetry is not None
        first = await fleet.read_all()
        assert all(isinstance(first[d], MinerReading) for d in mine + others)
        pid = telemetry.worker_pids[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def reaped() -> bool:
            return telemetry.worker_pids[0] != pid

        await until("the killed worker is reaped", reaped)
        for _ in range(2):  # failures on every read while it is down, logged once
            down = await fleet.read_all()
            assert all(isinstance(down[d], MinerReading) for d in others)
            for device_id in mine:
                result = down[device_id]
                assert isinstance(result, DeviceError) and result.failure is Failure.NO_ANSWER, result
                assert "telemetry worker 1 of 2" in result.detail
        assert fleet.driver(mine[0]) is not None  # its miners keep their drivers for commands

        async def back() -> bool:
            readings = await fleet.read_all()
            return all(isinstance(readings[d], MinerReading) for d in mine + others)

        await until("the restarted worker reads its miners", back)
        assert telemetry.worker_pids[0] not in (None, pid)
        assert not alive(pid)
        downs = [r for r in caplog.records if "read as failures until it is back" in r.getMessage()]
        assert len(downs) == 1 and "killed by SIGKILL" in downs[0].getMessage()


async def test_a_hung_worker_is_killed_and_restarted() -> None:
    sims = luxos("127.0.49", 2)
    async with running(sims), sharded([MinerTarget(s.host) for s in sims], worker_hang_s=3.0) as fleet:
        telemetry = fleet.telemetry
        assert telemetry is not None
        await fleet.read_all()
        pid = telemetry.worker_pids[1]
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, silent
        hung = (await fleet.read_all())[sims[1].host]
        assert isinstance(hung, DeviceError) and hung.failure is Failure.NO_ANSWER
        assert "hung" in hung.detail

        async def back() -> bool:
            return isinstance((await fleet.read_all())[sims[1].host], MinerReading)

        await until("the restarted worker reads its miner", back)
        assert not alive(pid)


# -- what crosses the link --------------------------------------------------------------------------


async def test_a_frame_over_the_bound_is_refused_before_it_is_read() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((MAX_FRAME_BYTES + 1).to_bytes(4, "big") + b"[")
    with pytest.raises(ProtocolError, match="over"):
        await read_frame(reader)


@pytest.mark.parametrize("body", [b"not json", b'{"a": 1}', b"[]", b"[1]"])
async def test_a_frame_that_is_not_a_message_is_refused(body: bytes) -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(len(body).to_bytes(4, "big") + body)
    with pytest.raises(ProtocolError):
        await read_frame(reader)


def test_a_reading_over_the_row_bound_comes_back_as_garbage() -> None:
    huge = MinerReading("m", "S21", "luxos", 3000.0, 3000.0, 200.0, True, errors=("x" * MAX_ROW_BYTES,))
    _, result = decode_result(json.loads(encode_result("m", huge)))
    assert isinstance(result, DeviceError) and result.failure is Failure.GARBAGE
    small = dataclasses.replace(huge, errors=("Slot 1 failing",), temperatures_c=(61.0,), fans_rpm=(4000,))
    assert decode_result(json.loads(encode_result("m", small))) == ("m", small)


@pytest.mark.parametrize("row", [["m", "r", 1], ["m", "e", "no_such_failure", "x"], ["m", "?"], "m"])
def test_a_row_that_is_not_a_reading_is_refused(row: object) -> None:
    with pytest.raises(ProtocolError):
        decode_result(row)


def test_an_identity_crosses_the_link_whole_and_builds_only_pyasic_classes() -> None:
    capability = MinerCapability(PowerControl.PROFILES, 1800.0, 3600.0, (1800.0, 3600.0), True,
                                 CapabilitySource.FIRMWARE)
    luxos_s21 = "pyasic.miners.antminer.luxos.X21.S21.LUXMinerS21"
    identity = Identity(luxos_s21, "pyasic.miners.backends.luxminer.LUXMiner", capability)
    assert Identity.decode(json.loads(json.dumps(identity.encode()))) == identity
    assert Identity.of(identity.build("127.0.0.1"), capability) == identity
    with pytest.raises(LookupError):
        Identity("os.system", None, capability).build("127.0.0.1")
    with pytest.raises(LookupError):  # a LuxOS class builds no Whatsminer
        Identity(luxos_s21, "pyasic.miners.backends.btminer.BTMinerV3", capability).build("127.0.0.1")
    with pytest.raises(ProtocolError):
        Identity.decode(["x", None, "volts", 1, 2, [], True, "firmware"])


@pytest.mark.parametrize("backend", ["pyasic.miners.backends.btminer.BTMinerV2",
                                     "pyasic.miners.backends.btminer.BTMinerV3"])
def test_a_whatsminer_is_built_with_the_api_the_worker_found(backend: str) -> None:
    """pyasic makes a Whatsminer's class when it is built, from the firmware version."""
    capability = MinerCapability(PowerControl.WATTS, 1800.0, 3900.0, source=CapabilitySource.FIRMWARE)
    identity = Identity("pyasic.miners.whatsminer.btminer.M6X.M60S.BTMinerM60SVK10", backend, capability)
    miner = identity.build("127.0.0.1")
    assert Identity.of(miner, capability) == identity


# -- no process outlives the daemon ---------------------------------------------------------------

DAEMON = """
import asyncio
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget

async def main():
    targets = [MinerTarget(f"127.0.46.{n}", firmware="luxos", model="Antminer S21") for n in (1, 2)]
    fleet = MinerFleet(targets, FleetSettings(telemetry_workers=2))
    await fleet.discover()
    print(*fleet.telemetry.worker_pids, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_workers_end_when_their_daemon_is_killed() -> None:
    daemon = await asyncio.create_subprocess_exec(sys.executable, "-c", DAEMON, stdout=asyncio.subprocess.PIPE)
    try:
        assert daemon.stdout is not None
        async with asyncio.timeout(UNTIL_S):
            pids = [int(pid) for pid in (await daemon.stdout.readline()).split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        daemon.kill()  # no close(): the workers find their link closed
        await daemon.wait()

    async def ended() -> bool:
        return not any(alive(pid) for pid in pids)

    await until("the orphaned workers exit", ended)
