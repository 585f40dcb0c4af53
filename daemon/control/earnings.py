"""What the site earns right now, by device class: the figures operators compare side by side.

Measured, not planned: a miner earns hashprice times the hashrate it reports; a GPU node earns
its running job's rate times the speed its cap allows (:mod:`wattshift.policies.ladders`).
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.model.snapshot import DeviceClass, GpuNodeState, Load, SiteSnapshot
from wattshift.policies.ladders import revenue_usd_per_hour


@dataclass(frozen=True, slots=True)
class ClassEarnings:
    watts: float
    usd_per_hour: float

    @property
    def usd_per_mwh(self) -> float | None:
        """Value of each MWh this class draws (None when it draws nothing)."""
        return self.usd_per_hour / self.watts * 1e6 if self.watts > 0 else None


def earning_usd_per_hour(load: Load, hashprice_usd_per_ph_day: float) -> float:
    if isinstance(load, GpuNodeState):
        if not load.reads_on:
            return 0.0
        return revenue_usd_per_hour(load, load.limit_watts or load.max_watts, hashprice_usd_per_ph_day)
    # A miner earns by the hashrate it reports, not by its curve.
    ths = load.reading.hashrate_ths if load.reading is not None else None
    return hashprice_usd_per_ph_day * (ths or 0.0) / 1000 / 24


def class_earnings(snapshot: SiteSnapshot) -> dict[DeviceClass, ClassEarnings]:
    hashprice = snapshot.prices.hashprice_usd_per_ph_day or 0.0
    totals = {kind: [0.0, 0.0] for kind in DeviceClass}
    for load in snapshot.loads:
        totals[load.kind][0] += load.measured_watts or 0.0
        totals[load.kind][1] += earning_usd_per_hour(load, hashprice)
    return {kind: ClassEarnings(w, usd) for kind, (w, usd) in totals.items()}
