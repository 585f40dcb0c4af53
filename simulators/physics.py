"""The physical model of one simulated ASIC miner.

Every protocol simulator (Braiins OS+, LuxOS, Whatsminer) answers from one of these, so the
numbers a driver reads over the wire are the numbers the launcher reports as the *true* draw.
The model is evaluated lazily against a clock: nothing ticks in the background, and a test that
injects a fake clock steps it exactly.

- power follows the target with a linear ramp (watts per second);
- hashrate follows power on the curve ``H = H0 * (p / P0) ** (1 / a)`` (DESIGN.md, section 4);
- temperature relaxes towards ``ambient + k * power`` with a time constant;
- asleep, the control board and fans still draw a few watts; told to sleep, the draw winds
  down on the same ramp (the firmware stops hashing at once, the boards take seconds);
- woken, the hashboards boot for ``wake_boot_s`` (fans and control board only, no hashrate),
  then the draw climbs on the ramp: real wakes take minutes; tests set it short;
- a reboot drops to idle draw for a while, boots the hashboards, then comes back mining at the
  default target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from wattshift.model.specs import MinerSpec

Clock = Callable[[], float]

# Booting hashboards draw little while their chips are enumerated and brought up and the fans
# spin up: this share of the nominal draw, over the sleep draw (under a tenth of the lowest
# setting, so by its draw alone a booting miner looks asleep).
BOOT_DRAW_SHARE = 0.03


class MinerPhysics:
    """True state of one miner. Thread-unsafe by design: it lives on one event loop."""

    def __init__(
        self,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        ramp_watts_per_s: float = 600.0,
        ambient_c: float = 25.0,
        temp_tau_s: float = 60.0,
        reboot_s: float = 20.0,
        wake_boot_s: float = 0.0,
    ) -> None:
        self.spec = spec
        self._clock = clock = clock or time.monotonic
        self.ramp_watts_per_s = ramp_watts_per_s
        self.ambient_c = ambient_c
        self.temp_tau_s = temp_tau_s
        self.reboot_s = reboot_s
        self.wake_boot_s = wake_boot_s  # hashboards booting after a wake or a reboot
        self.default_target_watts = spec.nominal_watts
        self.target_watts = spec.nominal_watts
        self.sleeping = False
        self.booted_at = clock()
        self._rebooting_until = -math.inf
        self._booting_until = -math.inf
        # Ramp state: draw was `_p0` at `_t0` and moves towards the set point.
        self._t0 = clock()
        self._p0 = spec.nominal_watts
        self._temp0 = self._equilibrium_temp(spec.nominal_watts)
        self._temp_t0 = self._t0

    # -- commands -------------------------------------------------------------------------------

    def set_target(self, watts: float) -> float:
        """Set the power target, clamped to the model's range; returns what was applied."""
        applied = min(max(float(watts), self.spec.min_watts), self.spec.max_watts)
        self._rebase()
        self.target_watts = applied
        return applied

    def sleep(self, *, settled: bool = False) -> None:
        """Stop hashing; the draw winds down on the ramp. ``settled``: as if asleep for a
        while already, the draw down at once (a test's or a cold site's starting state)."""
        self._rebase()
        self.sleeping = True
        self._booting_until = -math.inf
        if settled:
            self._p0 = self.spec.sleep_watts

    def wake(self) -> None:
        if not self.sleeping:
            return  # already running: nothing boots again
        self._rebase()
        self.sleeping = False
        if self.wake_boot_s > 0:
            # The boards boot from the sleep draw; the ramp starts once they are up.
            self._booting_until = self._clock() + self.wake_boot_s
            self._p0 = self.boot_watts()
            self._t0 = self._booting_until

    def reboot(self) -> None:
        """Restart: idle draw while booting, then mining again at the default target."""
        self._rebase()
        self._rebooting_until = self._clock() + self.reboot_s
        # Once restarted, the hashboards boot (where the miner models it), then ramp up.
        self._booting_until = self._rebooting_until + self.wake_boot_s if self.wake_boot_s > 0 else -math.inf
        self.sleeping = False
        self.target_watts = self.default_target_watts
        self.booted_at = self._rebooting_until
        self._p0 = self.boot_watts() if self.wake_boot_s > 0 else self.spec.sleep_watts
        self._t0 = max(self._rebooting_until, self._booting_until)

    # -- readings -------------------------------------------------------------------------------

    @property
    def rebooting(self) -> bool:
        return self._clock() < self._rebooting_until

    @property
    def booting(self) -> bool:
        """Woken, and the hashboards are still coming up: the firmware runs, nothing hashes."""
        return not self.rebooting and self._clock() < self._booting_until

    @property
    def mining(self) -> bool:
        """The firmware runs its hashboards (booting them, or hashing): not asleep, not rebooting."""
        return not self.sleeping and not self.rebooting

    def setpoint_watts(self) -> float:
        """Where the draw is heading now."""
        return self.target_watts if self.mining else self.spec.sleep_watts

    def power_watts(self) -> float:
        """The true draw at this instant (what a wattmeter on the PDU outlet would read)."""
        now = self._clock()
        setpoint = self.setpoint_watts()
        if now < self._rebooting_until:
            return self.spec.sleep_watts  # a reboot cuts the hashboards' supply at once
        if now < self._booting_until:
            return self.boot_watts()
        step = self.ramp_watts_per_s * max(0.0, now - max(self._t0, self._booting_until))
        start = max(self._p0, self.spec.sleep_watts)
        if setpoint >= start:
            return min(setpoint, start + step)
        return max(setpoint, start - step)

    def boot_watts(self) -> float:
        return self.spec.sleep_watts + BOOT_DRAW_SHARE * self.spec.nominal_watts

    def hashrate_ths(self) -> float:
        if not self.mining or self.booting:
            return 0.0
        return self.spec.hashrate_at(self.power_watts())

    def temperature_c(self) -> float:
        now = self._clock()
        eq = self._equilibrium_temp(self.power_watts())
        decay = math.exp(-max(0.0, now - self._temp_t0) / self.temp_tau_s)
        return eq + (self._temp0 - eq) * decay

    def uptime_s(self) -> int:
        return max(0, int(self._clock() - self.booted_at))

    def max_possible_watts(self) -> float:
        """Worst case this miner can ever draw: what a controller must assume when blind."""
        return self.spec.max_watts

    # -- internals ------------------------------------------------------------------------------

    def _equilibrium_temp(self, watts: float) -> float:
        return self.ambient_c + 40.0 * watts / self.spec.nominal_watts

    def _rebase(self) -> None:
        """Freeze the current draw and temperature as the start of the next ramp."""
        now = self._clock()
        self._temp0 = self.temperature_c()
        self._temp_t0 = now
        self._p0 = self.power_watts()
        self._t0 = now
