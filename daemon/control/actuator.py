"""Send a batch of steps to the devices: bounded concurrency, a deadline per step, every
outcome recorded. The drivers confirm each command by read-back; the actuator only makes sure
that no single device can hold up the rest and that every failure comes back classified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from wattshift.drivers.base import DeviceError, MinerDriver
from wattshift.model.miner import Failure, PowerControl

from .sequencer import Action, Step


class Actuated(Protocol):
    """What a step needs from a device: a miner's driver, or a GPU node's (jobs and caps)."""

    async def set_power_limit(self, watts: float) -> float: ...

    async def sleep(self) -> None: ...

    async def wake(self) -> None: ...


DriverLookup = Callable[[str], Actuated | None]


@dataclass(frozen=True, slots=True)
class StepResult:
    step: Step
    failure: Failure | None
    detail: str
    held_watts: float | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failure is None


async def execute(
    steps: Iterable[Step],
    drivers: DriverLookup,
    *,
    concurrency: int,
    timeout_seconds: float,
) -> list[StepResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(step: Step) -> StepResult:
        async with gate:
            started = time.monotonic()
            driver = drivers(step.device_id)
            if driver is None:
                return StepResult(step, Failure.UNIDENTIFIED, "no driver for this device", None, 0.0)
            try:
                async with asyncio.timeout(timeout_seconds):
                    held = await _apply(driver, step)
            except DeviceError as err:
                return StepResult(step, err.failure, err.detail, None, time.monotonic() - started)
            except TimeoutError:
                detail = f"no confirmation within {timeout_seconds:g} s"
                return StepResult(step, Failure.TIMEOUT, detail, None, time.monotonic() - started)
            return StepResult(step, None, "ok", held, time.monotonic() - started)

    return list(await asyncio.gather(*(one(s) for s in steps)))


async def _apply(driver: Actuated, step: Step) -> float | None:
    if step.action is Action.SLEEP:
        await driver.sleep()
        return 0.0
    if step.action is Action.WAKE and isinstance(driver, MinerDriver):
        capability = driver.capability
        if capability.control is PowerControl.ON_OFF:
            # No power target to set: it wakes at the one setting it has.
            await driver.wake()
            return capability.max_watts
    # The limit first, confirmed while it sleeps, so that it cannot come up at an old, higher
    # one; then the wake, confirmed by the firmware's state (the boards take minutes to boot).
    held = await driver.set_power_limit(step.watts)
    if step.action is Action.WAKE:
        await driver.wake()
    return held
