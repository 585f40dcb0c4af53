"""The hashboard boot after a wake, on a manual clock: a little draw, no hashrate, then the ramp."""

from __future__ import annotations

import pytest

from wattshift.model.specs import SPECS
from wattshift.simulators.physics import MinerPhysics

S21 = SPECS["Antminer S21"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def physics(clock: Clock, boot_s: float) -> MinerPhysics:
    return MinerPhysics(
        S21, clock=clock, ramp_watts_per_s=100.0, wake_boot_s=boot_s, reboot_s=5.0
    )


def test_a_wake_boots_the_boards_then_ramps() -> None:
    clock = Clock()
    miner = physics(clock, boot_s=60.0)
    miner.sleep(settled=True)
    clock.now += 10
    miner.wake()
    assert miner.booting and miner.mining
    clock.now += 30  # half way through the boot: fans and control board, no hashing
    assert miner.hashrate_ths() == 0.0
    booting = miner.boot_watts()
    assert S21.sleep_watts < booting < S21.min_watts / 10  # by its draw alone it looks asleep
    assert miner.power_watts() == pytest.approx(booting)
    clock.now += 30  # booted: the ramp starts from the boot's draw
    assert not miner.booting
    assert miner.power_watts() == pytest.approx(booting)
    clock.now += 10
    assert miner.power_watts() == pytest.approx(booting + 1000)
    assert miner.hashrate_ths() > 0


def test_a_reboot_boots_the_boards_after_the_restart() -> None:
    clock = Clock()
    miner = physics(clock, boot_s=20.0)
    miner.reboot()
    clock.now += 5  # the restart is over, the boards boot
    assert miner.booting and miner.hashrate_ths() == 0.0
    clock.now += 20
    assert not miner.booting
    clock.now += 10  # up the ramp
    assert miner.hashrate_ths() > 0


def test_without_a_boot_delay_nothing_changes() -> None:
    clock = Clock()
    miner = physics(clock, boot_s=0.0)
    miner.sleep(settled=True)
    miner.wake()
    assert not miner.booting
    clock.now += 1
    assert miner.power_watts() == pytest.approx(
        S21.sleep_watts + 100.0
    )  # the ramp starts at once
    clock.now += 20
    assert miner.hashrate_ths() > 0


def test_a_command_during_the_boot_does_not_skip_it() -> None:
    clock = Clock()
    miner = physics(clock, boot_s=60.0)
    miner.sleep()
    miner.wake()
    clock.now += 10
    miner.set_target(3000)
    assert miner.booting and miner.hashrate_ths() == 0.0
    clock.now += 50  # booted; then up the ramp
    assert not miner.booting
    clock.now += 10
    assert miner.hashrate_ths() > 0
