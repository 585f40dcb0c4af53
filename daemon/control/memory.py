"""What the loop remembers about each device between ticks: when it last changed between on and
off (the policy's dwell times), whether it is trusted to obey, and whether a wake is under way."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from wattshift.model.snapshot import Load

log = logging.getLogger(__name__)

# A woken miner boots its hashboards for minutes before it draws and hashes; until it reads on
# it is counted at its limit. One still not running after twice its model's boot time (and at
# least this long) did not wake: it is then taken as it reads (asleep), and the policy may send
# the wake again.
MIN_BOOT_ALLOWANCE_SECONDS = 120.0


def boot_allowance(boot_seconds: float) -> float:
    return max(2.0 * boot_seconds, MIN_BOOT_ALLOWANCE_SECONDS)


BOOT_ALLOWANCE_SECONDS = boot_allowance(300.0)  # the model table's default boot time


@dataclass(frozen=True, slots=True)
class Switched:
    """A miner's last on/off change that the loop commanded and the miner took: which way, and
    when by the wall clock. Kept across a restart (wattshift.daemon.runtime.site_state), so that
    the restarted loop keeps the minimum up and down times the running one kept."""

    on: bool
    at: datetime


@dataclass
class DeviceMemory:
    state_since: float | None = None
    was_on: bool | None = None
    distrusted_until: float = float("-inf")
    waking: bool = False  # a wake was sent and the device has not been seen running since
    waking_since: float = float("-inf")

    def start_waking(self, now_clock: float) -> None:
        """A wake was sent (or may have been): counted on, at its limit, until seen running."""
        self.waking, self.waking_since = True, now_clock

    def still_waking(self, device_id: str, now_clock: float, allowance: float = BOOT_ALLOWANCE_SECONDS) -> bool:
        """Waking, within the boot allowance (:func:`boot_allowance` of its boot time); past it
        the wake is given up on."""
        if self.waking and now_clock - self.waking_since > allowance:
            log.warning("%s: woken over %.0f s ago and still not running; taken as it reads", device_id, allowance)
            self.waking = False
        return self.waking

    def restore(self, switched: bool, age_seconds: float, now_clock: float, allowance: float) -> None:
        """Put back the last on/off change the run before a restart made, ``age_seconds`` ago by
        the wall clock, on this run's loop clock. A miner woken within its boot allowance counts
        as waking (on, at its limit), as the running loop counted it, until it is seen running;
        one already waking (a wake the crash left open) keeps its allowance from the restart."""
        self.state_since = now_clock - max(0.0, age_seconds)  # a clock set back: changed just now
        self.was_on = switched
        if switched and age_seconds < allowance and not self.waking:
            self.start_waking(self.state_since)

    def remember(self, state: Load, now_clock: float) -> None:
        """Note when the device changed between on and off, for the policy's dwell times."""
        if state.controllable and self.was_on is not None and state.is_on != self.was_on:
            self.state_since = now_clock
        if state.controllable:
            self.was_on = state.is_on
