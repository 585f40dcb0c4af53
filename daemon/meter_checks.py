"""What the site meter tells the control loop (pure: readings in, answers out).

- :func:`shed_confirmed` -- did the meter really fall by what the shed miners released? The
  miners' own readings can lie (a PDU sees what a miner's firmware does not); the meter is
  the breaker's view.
- :class:`OverheadEstimate` -- meter minus the sum of device readings, smoothed: cooling,
  transformer and cable losses, the controller itself. Added to the site's worst case so that
  the budget the policy hands out is what is left after the overheads.
- :func:`hold_increases` -- a stale meter blocks increases: sheds still go, grants wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.drivers.mqtt_meter import MeterReading

from .sequencer import Plan

SHED_TOLERANCE_WATTS = 200.0  # meter resolution and the other loads' noise


def shed_confirmed(
    before: MeterReading | None,
    after: MeterReading | None,
    expected_drop_watts: float,
    *,
    tolerance_watts: float = SHED_TOLERANCE_WATTS,
) -> bool:
    """True when a meter reading taken after the shed is at least ``expected_drop_watts``
    (less the tolerance) below the one taken before it. No reading, a stale one, or no
    newer reading since the shed: not confirmed (the caller keeps the worst case)."""
    if before is None or after is None or after.stale or after.at <= before.at:
        return False
    return before.watts - after.watts >= expected_drop_watts - tolerance_watts


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

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha {self.alpha}: must be in (0, 1]")

    def update(self, meter: MeterReading | None, device_watts: float, *, all_devices_read: bool) -> float:
        if meter is None or meter.stale or not all_devices_read:
            return self.watts
        sample = max(0.0, meter.watts - device_watts)
        self.watts = sample if self.samples == 0 else self.watts + self.alpha * (sample - self.watts)
        self.samples += 1
        return self.watts


def increases_allowed(meter: MeterReading | None) -> bool:
    """A site with a meter may increase its draw only while the meter is fresh."""
    return meter is not None and not meter.stale


def hold_increases(plan: Plan) -> Plan:
    """The plan with its grants (and deferred grants) dropped: sheds only."""
    return Plan(plan.sheds, (), ())
