"""Switching figures in the live loop: the site file's override reaches every miner's state, and
a wake is given up on after twice the model's boot time (pure: files and memory, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wattshift.daemon.config.site import load_site
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.control.memory import BOOT_ALLOWANCE_SECONDS, DeviceMemory, boot_allowance
from wattshift.daemon.control.observe import miner_slots, miner_state
from wattshift.model.miner import CapabilitySource, MinerCapability, MinerReading, PowerControl
from wattshift.model.specs import SPECS

SITE = """\
name: barn
budget_kw: 100
miners:
  - addresses: 10.0.0.1-10.0.0.2
    model: Antminer S21
    switching: {boot_seconds: 60, min_down_seconds: 1800}
  - addresses: 10.0.1.1
    model: Whatsminer M60S
  - addresses: 10.0.2.1
"""
WATTS = MinerCapability(PowerControl.WATTS, 1800, 4000, source=CapabilitySource.FIRMWARE)


def test_a_groups_override_reaches_its_miners_state_and_the_rest_keep_their_models(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    slots = miner_slots(load_site(path, environ={}))
    s21 = SPECS["Antminer S21"].switching
    got = slots["10.0.0.2"].switching
    assert (got.boot_seconds, got.min_down_seconds, got.wear_usd_per_cycle, got.min_up_seconds) == (
        60, 1800, s21.wear_usd_per_cycle, s21.min_up_seconds)
    assert slots["10.0.1.1"].switching == SPECS["Whatsminer M60S"].switching
    assert slots["10.0.2.1"].switching.boot_seconds == 300  # no model: the table's defaults
    reading = MinerReading("10.0.0.2", "Antminer S21", "braiins", 3500, 3500, 200, True)
    assert miner_state(slots["10.0.0.2"], reading, WATTS, state_since=None).switching == got


def test_a_bad_override_in_the_live_site_file_names_field_value_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.replace("min_down_seconds: 1800", "min_down_seconds: 200000"))
    with pytest.raises(FileInvalid) as caught:
        load_site(path, environ={})
    assert "miners[0].switching.min_down_seconds: Input should be less than or equal to 86400" in str(caught.value)


def test_a_wake_is_given_up_on_after_twice_the_models_boot_time() -> None:
    assert BOOT_ALLOWANCE_SECONDS == 600  # the table's default 300 s boot, as before
    quick = DeviceMemory()
    quick.start_waking(0.0)
    assert quick.still_waking("m", 119.0, boot_allowance(60))
    assert not quick.still_waking("m", 121.0, boot_allowance(60))
    slow = DeviceMemory()
    slow.start_waking(0.0)
    assert slow.still_waking("m", 1100.0, boot_allowance(600))  # a 10-minute boot is still booting


def test_a_restored_switch_lands_on_this_runs_clock_and_a_recent_wake_counts_as_waking() -> None:
    stopped = DeviceMemory()
    stopped.restore(False, 60.0, 1000.0, boot_allowance(300))
    assert (stopped.state_since, stopped.was_on, stopped.waking) == (940.0, False, False)
    woken = DeviceMemory()
    woken.restore(True, 60.0, 1000.0, boot_allowance(300))  # still within its 600 s boot allowance
    assert (woken.state_since, woken.was_on, woken.waking) == (940.0, True, True)
    assert woken.still_waking("m", 1530.0, boot_allowance(300))
    assert not woken.still_waking("m", 1550.0, boot_allowance(300))  # 610 s after the wake itself
    booted = DeviceMemory()
    booted.restore(True, 700.0, 1000.0, boot_allowance(300))
    assert booted.was_on and not booted.waking
    left_open = DeviceMemory()  # a wake the crash left open: its allowance runs from the restart
    left_open.start_waking(1000.0)
    left_open.restore(True, 60.0, 1000.0, boot_allowance(300))
    assert left_open.still_waking("m", 1590.0, boot_allowance(300))
    ahead = DeviceMemory()  # the wall clock was set back since: taken as changed just now
    ahead.restore(False, -3600.0, 1000.0, boot_allowance(300))
    assert ahead.state_since == 1000.0
