"""What the site meter tells the control loop (pure: readings in, answers out).

- :func:`shed_confirmed` -- after the sheds, does the meter leave room for the grants waiting
  on them? The devices' own readings can lie (a PDU sees what a miner's firmware does not);
  the meter is the breaker's view.
- :class:`OverheadEstimate` -- meter minus the sum of device readings, smoothed: cooling,
  transformer and cable losses, the controller itself. Added to the site's worst case so that
  the budget the policy hands out is what is left after the overheads.
- :func:`hold_increases` -- a stale meter blocks increases: sheds still go, grants wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.drivers.mqtt_meter import MeterReading

from .sequencer import Plan


@dataclass(frozen=True)
class MeterRoom:
    """What grants deferred behind sheds need from the meter: a fresh reading newer than
    ``sent`` (the latest when the sheds went out) with ``grants_watts`` of room under
    ``limit_watts`` (the site limit the plan used, plus the overhead taken off it: the meter
    sees the overhead too)."""

    sent: MeterReading | None
    grants_watts: float
    limit_watts: float


def shed_confirmed(room: MeterRoom, after: MeterReading | None) -> bool:
    """True when ``after`` leaves room for the grants.

    The meter is the breaker's view: a miner whose firmware says it slept while it still draws
    shows here. It is checked against room, not against the drop the devices report, because
    the meter sums the whole site: loads granted a tick ago are still ramping up, hundreds of
    miners wander by a percent each, so a drop of one miner's worth cannot be told from noise
    on a large site, while "is there room for what we are about to grant" always can. Power
    that does not go away (a liar, an unmetered load) shows up in the overhead estimate next
    and comes off the budget from then on.
    """
    if after is None or after.stale or (room.sent is not None and after.at <= room.sent.at):
        return False
    return after.watts + room.grants_watts <= room.limit_watts


@dataclass
class OverheadEstimate:
    """Exponentially smoothed ``meter - sum(device readings)``, never below zero.

    ``alpha`` is the weight of a new sample (0.2: about the last 5 samples count). A sample is
    taken only when the meter is fresh and every device answered, otherwise the difference
    would count an unread miner as overhead.
    """

    alpha: float = 0.2
    watts: float = 0.0
    samples: int = 0
    # Before the first full sample, a meter reading with some devices unread bounds the overhead
    # from above (their draw counted as overhead): safe to plan with until a full sample comes.
    bounded: bool = False

    @property
    def known(self) -> bool:
        """Measured, or bounded from above: until then the unmetered load is unknown, and an
        unknown load may be anything (invariant 3), so increases wait."""
        return self.samples > 0 or self.bounded

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha {self.alpha}: must be in (0, 1]")

    def update(self, meter: MeterReading | None, device_watts: float, *, all_devices_read: bool) -> float:
        if meter is None or meter.stale:
            return self.watts
        sample = max(0.0, meter.watts - device_watts)
        if not all_devices_read:
            if self.samples == 0:
                self.watts, self.bounded = max(self.watts, sample), True
            return self.watts
        self.watts = sample if self.samples == 0 else self.watts + self.alpha * (sample - self.watts)
        self.samples += 1
        return self.watts


def increases_allowed(meter: MeterReading | None) -> bool:
    """A site with a meter may increase its draw only while the meter is fresh."""
    return meter is not None and not meter.stale


def hold_increases(plan: Plan) -> Plan:
    """The plan with its grants (and deferred grants) dropped: sheds only."""
    return Plan(plan.sheds, (), ())
