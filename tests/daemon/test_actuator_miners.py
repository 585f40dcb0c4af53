"""The daemon's actuator driving real pyasic drivers against the firmware simulators: every
step (limit, sleep, wake) and every fault comes back as the StepResult the loop acts on.
On/off miners are woken with resume alone (issue 11, item 1)."""

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

from wattshift.daemon.control.actuator import StepResult, execute
from wattshift.daemon.control.sequencer import Action, Step
from wattshift.drivers.pyasic_backends import import_pyasic
from wattshift.drivers.pyasic_miner import PyasicMiner
from wattshift.model.miner import Failure, PowerControl
from wattshift.model.specs import SPECS
from wattshift.simulators.braiins import BraiinsMiner
from wattshift.simulators.miner import Fault, SimulatedMiner
from wattshift.simulators.whatsminer import WhatsminerMiner

pytestmark = [
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning"),
]

# The commands that set a power target, by firmware, as the simulators record them.
POWER_COMMANDS = {"braiins": {"SetPowerTarget"}, "whatsminer": {"adjust_power_limit"}, "luxos": {"profileset"}}


@asynccontextmanager
async def driven(sim: SimulatedMiner) -> AsyncIterator[PyasicMiner]:
    await sim.start()
    try:
        miner = await import_pyasic().get_miner(sim.host)
        assert miner is not None
        yield await PyasicMiner.open(miner, deadlines=TEST_DEADLINES)
    finally:
        await sim.stop()
        await collect_pyasic_leftovers()


def step(host: str, action: Action, watts: float) -> Step:
    return Step(host, "site", action, watts, 0.0, watts, "test")


async def run(driver: PyasicMiner, action: Action, watts: float = 0.0) -> StepResult:
    [result] = await execute([step(driver.device_id, action, watts)], {driver.device_id: driver}.get,
                             concurrency=4, timeout_seconds=5.0)
    return result


def on_off(firmware: str, host: str) -> Any:
    """A miner whose firmware cannot say what watts it takes: older Braiins OS+ without the
    constraints API on a model missing from the table, a Whatsminer without power limiting."""
    if firmware == "braiins":
        sim = BraiinsMiner(host, SPECS["Antminer S19 Pro"], seed=5, **FAST_PHYSICS)
        sim.reports_constraints = False
    else:
        sim = WhatsminerMiner(host, SPECS["Whatsminer M30S+"], seed=5, **FAST_PHYSICS)
        sim.power_limit_supported = False
    return sim


@pytest.mark.parametrize("kind", SIM_KINDS, ids=lambda k: k.firmware)
async def test_limit_sleep_and_wake_in_watts(kind: SimKind) -> None:
    sim = kind.build(120)
    async with driven(sim) as driver:
        limited = await run(driver, Action.SET_LIMIT, 3000)
        assert limited.ok, limited.detail
        assert limited.held_watts == driver.capability.achievable_watts(3000)
        assert sim.physics.target_watts == pytest.approx(limited.held_watts)

        slept = await run(driver, Action.SLEEP)
        assert slept.ok and slept.held_watts == 0.0 and sim.physics.sleeping

        wanted = driver.capability.min_watts + 100
        woken = await run(driver, Action.WAKE, wanted)
        assert woken.ok, woken.detail
        assert not sim.physics.sleeping
        # The target is set before the boards come up, so it never wakes at the old 3000 W.
        assert sim.physics.target_watts == pytest.approx(driver.capability.achievable_watts(wanted))
        assert woken.held_watts == pytest.approx(sim.physics.target_watts)


@pytest.mark.parametrize("firmware", ["braiins", "whatsminer"])
async def test_an_on_off_miner_is_woken_with_resume_alone(firmware: str) -> None:
    sim = on_off(firmware, "127.0.8.121" if firmware == "braiins" else "127.0.8.122")
    async with driven(sim) as driver:
        assert driver.capability.control is PowerControl.ON_OFF
        assert (await run(driver, Action.SLEEP)).ok and sim.physics.sleeping
        sim.commands_received.clear()
        woken = await run(driver, Action.WAKE, driver.capability.max_watts)
        assert woken.ok, woken.detail  # before: set_power_limit raised UNSUPPORTED, no wake sent
        assert woken.held_watts == driver.capability.max_watts
        assert sim.physics.mining
        assert not POWER_COMMANDS[firmware] & set(sim.commands_received)


# What each fault must come out as for every step.
FAULTS = {
    Fault.NO_ANSWER: Failure.NO_ANSWER,
    Fault.HANG: Failure.TIMEOUT,
    Fault.GARBAGE: Failure.GARBAGE,
    Fault.REFUSE: Failure.REFUSED,
    Fault.IGNORE: Failure.IGNORED,
}


@pytest.mark.parametrize("action", [Action.SET_LIMIT, Action.SLEEP, Action.WAKE], ids=str)
@pytest.mark.parametrize("fault", list(FAULTS), ids=str)
@pytest.mark.parametrize("kind", SIM_KINDS, ids=lambda k: k.firmware)
@pytest.mark.filterwarnings("ignore:Exception ignored in.*StreamWriter:pytest.PytestUnraisableExceptionWarning")
async def test_every_fault_comes_back_classified(kind: SimKind, fault: Fault, action: Action) -> None:
    sim = kind.build(130)
    async with driven(sim) as driver:
        if action is Action.WAKE:
            sim.physics.sleep(settled=True)
        before = (sim.physics.sleeping, sim.physics.target_watts)
        sim.set_fault(fault)
        result = await run(driver, action, driver.capability.min_watts)
        assert result.failure is FAULTS[fault], result.detail
        assert result.held_watts is None
        assert (sim.physics.sleeping, sim.physics.target_watts) == before
