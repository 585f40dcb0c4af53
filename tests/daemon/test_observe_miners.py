"""How observe counts a miner the firmware describes: booting ones at their limit, on/off
ones at their one setting (pure: readings in, MinerState out)."""

from __future__ import annotations

from wattshift.daemon.config.site import MinerGroup
from wattshift.daemon.control.observe import MinerSlot, miner_state
from wattshift.model.miner import (
    CapabilitySource,
    MinerCapability,
    MinerReading,
    PowerControl,
)

SLOT = MinerSlot("10.0.0.1", "site", MinerGroup(addresses=["10.0.0.1"]))
WATTS = MinerCapability(PowerControl.WATTS, 1500, 3600, source=CapabilitySource.FIRMWARE)
ON_OFF = MinerCapability(PowerControl.ON_OFF, 3400, 3400, source=CapabilitySource.READING)


def reading(*, watts: float, limit: float, mining: bool, booting: bool = False) -> MinerReading:
    return MinerReading("10.0.0.1", "Antminer S19 Pro", "braiins", watts, limit, 0.0, mining, booting=booting)


def test_a_booting_miner_counts_at_its_limit_though_this_loop_did_not_wake_it() -> None:
    # A restart of the daemon mid-boot: no memory of the wake, only the firmware's word.
    state = miner_state(SLOT, reading(watts=110, limit=3000, mining=False, booting=True), WATTS, state_since=None)
    assert state.is_on and not state.reads_on
    assert state.worst_case_watts == 3000


def test_a_miner_asleep_counts_at_its_draw() -> None:
    state = miner_state(SLOT, reading(watts=12, limit=3000, mining=False), WATTS, state_since=None)
    assert not state.is_on and state.worst_case_watts == 12


def test_an_on_off_miner_comes_up_at_its_one_setting_whatever_limit_it_reads() -> None:
    # A Whatsminer without power limiting reads "Power Limit" 0.
    state = miner_state(SLOT, reading(watts=100, limit=0, mining=True, booting=True), ON_OFF, state_since=None)
    assert state.limit_watts == 3400
    assert state.worst_case_watts == 3400
