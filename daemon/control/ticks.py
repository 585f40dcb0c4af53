"""When the control loop ticks: a fixed schedule, and early ticks on request that never move it.

The regular tick is what catches everything nobody announced (a miner that woke by itself, a
reading that drifted), so nothing may delay it: an early tick (a command, a budget event) runs
in between and leaves the schedule where it was. A burst of requests coalesces: an early tick
starts no sooner than ``gap`` after the last tick started, and every request that arrives before
it starts is served by it. Pure arithmetic on the caller's clock, so tests step it on a fake one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Short enough that a budget event is acted on at once, long enough that fifteen commands sent
# in a row cost a handful of ticks, not fifteen.
EARLY_TICK_GAP_SECONDS = 0.5


@dataclass(slots=True)
class TickSchedule:
    interval: float
    next_regular: float  # when the next regular tick is due
    gap: float = EARLY_TICK_GAP_SECONDS
    last_start: float = field(default=float("-inf"))

    @classmethod
    def starting(cls, now: float, interval: float, gap: float = EARLY_TICK_GAP_SECONDS) -> TickSchedule:
        """A schedule whose first regular tick is due ``now``."""
        return cls(interval, now, min(gap, interval))

    def start(self, now: float) -> bool:
        """A tick starts ``now``; returns whether it is the regular one. Only the regular tick
        moves the schedule on, by whole intervals from where it was, so the interval does not
        drift; a tick that overran the interval restarts the schedule from now."""
        self.last_start = now
        if now < self.next_regular:
            return False
        self.next_regular += self.interval
        if self.next_regular <= now:
            self.next_regular = now + self.interval
        return True

    def wait(self, now: float, *, requested: bool) -> float:
        """Seconds from ``now`` until the next tick: the regular one, or an early one when one
        was requested, once the gap since the last start has passed."""
        due = min(self.next_regular, self.last_start + self.gap) if requested else self.next_regular
        return max(0.0, due - now)
