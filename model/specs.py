"""Nameplate figures of miner models: the spec table simulators and the back-test share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MinerSwitching:
    """What switching a miner costs and forbids: the five switching fields of a :class:`MinerSpec`
    (after the site file's overrides), as the site model, the policies and the loop read them."""

    boot_seconds: float = 0.0
    boot_watts: float = 0.0
    wear_usd_per_cycle: float = 0.0
    min_up_seconds: float = 0.0
    min_down_seconds: float = 0.0

    def start_usd(self, power_usd_per_mwh: float, revenue_usd_per_hour: float) -> float:
        """What one start costs: the wear, the energy drawn while booting and the revenue the
        boot time does not earn (a negative power price makes booting pay a little)."""
        boot_hours = self.boot_seconds / 3600
        return (self.wear_usd_per_cycle + self.boot_watts / 1e6 * boot_hours * power_usd_per_mwh
                + revenue_usd_per_hour * boot_hours)


# Free switching: what a miner state says when nothing told it otherwise (tests, unknown loads).
NO_MINER_SWITCHING = MinerSwitching()


@dataclass(frozen=True, slots=True)
class MinerSpec:
    """One row of the model table: nominal point and the range the firmware accepts."""

    model: str
    nominal_watts: float
    nominal_ths: float
    min_watts: float
    max_watts: float
    sleep_watts: float = 12.0
    curve_exponent: float = 2.0  # the `a` in H = H0 * (p/P0) ** (1/a)
    hashboards: int = 3
    fans: int = 4
    # Switching physics (issue 15). A woken miner boots its hashboards for `boot_seconds`,
    # drawing `boot_watts` and hashing nothing; each stop/start cycle wears fans, PSU and
    # solder joints (thermal cycling), priced at `wear_usd_per_cycle`; once switched, a miner
    # stays up (or down) at least `min_up_seconds` (`min_down_seconds`). Defaults are operator
    # rules of thumb, not vendor figures: the site file may override them per miner.
    boot_seconds: float = 300.0
    boot_watts: float = 350.0
    wear_usd_per_cycle: float = 0.25
    min_up_seconds: float = 900.0
    min_down_seconds: float = 900.0

    @property
    def switching(self) -> MinerSwitching:
        return MinerSwitching(self.boot_seconds, self.boot_watts, self.wear_usd_per_cycle, self.min_up_seconds,
                              self.min_down_seconds)

    def hashrate_at(self, watts: float) -> float:
        """TH/s at a steady draw of `watts` (0 below the minimum: the chips stop)."""
        if watts < self.min_watts * 0.5:
            return 0.0
        return self.nominal_ths * float((watts / self.nominal_watts) ** (1.0 / self.curve_exponent))


# The switching figures of a model the table does not know (the live loop still needs them).
DEFAULT_SWITCHING = MinerSpec("unknown", 0, 0, 0, 0).switching

# Nominal points from DESIGN.md, section 4; ranges as the firmwares accept them.
SPECS: dict[str, MinerSpec] = {
    spec.model: spec
    for spec in (
        MinerSpec("Antminer S19 Pro", 3250, 110, 1500, 3600),
        MinerSpec("Antminer S19 XP", 3010, 140, 1500, 3600),
        MinerSpec("Antminer S21", 3500, 200, 1800, 4000),
        MinerSpec("Antminer S21 Pro", 3510, 234, 1800, 4000),
        MinerSpec("Whatsminer M30S+", 3400, 100, 1700, 3400),
        MinerSpec("Whatsminer M50S", 3276, 126, 1800, 3700),
        MinerSpec("Whatsminer M60S", 3422, 186, 1800, 3900),
    )
}
