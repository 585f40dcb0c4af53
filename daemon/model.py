"""The site as the control loop sees it at one instant: immutable, built once per tick.

Drivers produce readings; :func:`wattshift.daemon.observe.build_snapshot` turns them into a
:class:`SiteSnapshot`; policies read it and nothing else. Every power here is in watts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from wattshift.drivers.base import Failure, MinerCapability, MinerReading


# A sleeping miner's control board and fans, when no reading says otherwise.
IDLE_WATTS = 15.0


class DeviceClass(enum.StrEnum):
    MINER = "miner"
    GPU = "gpu"


@dataclass(frozen=True, slots=True)
class EfficiencyCurve:
    """``hashrate = nominal_ths * (watts / nominal_watts) ** (1 / exponent)`` (DESIGN.md §4)."""

    nominal_watts: float
    nominal_ths: float
    exponent: float = 2.0

    def ths_at(self, watts: float) -> float:
        if watts <= 0:
            return 0.0
        return self.nominal_ths * (watts / self.nominal_watts) ** (1.0 / self.exponent)

    @property
    def joules_per_th(self) -> float:
        return self.nominal_watts / self.nominal_ths


@dataclass(frozen=True, slots=True)
class MinerState:
    """One miner at this tick: what it said, what it can do, and what we must assume."""

    device_id: str
    circuit: str
    model: str | None
    capability: MinerCapability
    curve: EfficiencyCurve
    reading: MinerReading | None  # None: no answer this tick
    failure: Failure | None
    max_watts: float  # the most it can draw, whatever we believe
    state_since: float | None = None  # loop-clock time of the last on/off change we made
    # Told to wake and not yet seen running: real boards take minutes to come up, and until
    # then the miner must be counted as if it were already at its limit.
    waking: bool = False

    @property
    def controllable(self) -> bool:
        return self.reading is not None and self.failure is None

    @property
    def measured_watts(self) -> float | None:
        return self.reading.watts if self.reading is not None else None

    @property
    def is_on(self) -> bool:
        """Mining or about to: a miner told to wake counts as on (and at its limit) already."""
        return self.waking or self.reads_on

    @property
    def reads_on(self) -> bool:
        """Mining, by the best evidence we have (an unknown miner counts as on)."""
        if self.reading is None:
            return True
        if self.reading.mining is False:
            return False
        return (self.reading.watts or 0.0) > self.capability.min_watts * 0.5

    @property
    def worst_case_watts(self) -> float:
        """What this miner may draw before we next hear from it (DESIGN.md invariant 3).

        Unknown means the maximum. A miner that answers may still ramp up to its limit, and
        a miner still ramping down draws what it draws now.
        """
        if not self.controllable or self.reading is None:
            return self.max_watts
        measured = self.reading.watts if self.reading.watts is not None else self.max_watts
        if not self.is_on:
            return measured
        limit = self.reading.limit_watts if self.reading.limit_watts is not None else self.max_watts
        return max(measured, min(limit, self.max_watts))

    @property
    def label(self) -> str:
        return f"{self.model or 'miner'} {self.device_id}"


@dataclass(frozen=True, slots=True)
class Prices:
    hashprice_usd_per_ph_day: float | None
    power_usd_per_mwh: float | None
    hashprice_stale: bool = False
    power_stale: bool = False


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    at: datetime  # wall clock, for the journal and for schedule windows
    clock: float  # loop clock (monotonic seconds): dwell times are measured on it
    budget_watts: float  # the site limit in force, reserve already taken off
    circuit_limits: Mapping[str, float]
    circuit_parents: Mapping[str, str | None]
    miners: tuple[MinerState, ...]
    prices: Prices
    _by_id: Mapping[str, MinerState] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", MappingProxyType({m.device_id: m for m in self.miners}))
        object.__setattr__(self, "circuit_limits", MappingProxyType(dict(self.circuit_limits)))
        object.__setattr__(self, "circuit_parents", MappingProxyType(dict(self.circuit_parents)))

    def miner(self, device_id: str) -> MinerState:
        return self._by_id[device_id]

    def effective_limits(self) -> dict[str, float]:
        """Circuit limits with the site's own limit replaced by the budget in force."""
        limits = dict(self.circuit_limits)
        limits["site"] = min(limits.get("site", self.budget_watts), self.budget_watts)
        return limits
