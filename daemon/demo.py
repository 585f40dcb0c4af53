"""The demo scenario: a simulated site of mixed miners, a replayed hashprice trace, and a
budget cut announced part way, run under the real daemon. Also the ledger that keeps score
from the simulators' *true* draw, not from what the daemon believes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from wattshift.simulators.physics import SPECS
from wattshift.simulators.site import MinerBatch, SimulatedSite

from .budget import BudgetEvent, BudgetSchedule
from .config import SiteConfig

HASHPRICE_TRACE = "hashprice_2025_daily.csv"
SECONDS_PER_TRACE_YEAR = 365 * 86400


@dataclass(frozen=True)
class Scenario:
    miners: int = 240
    duration_s: float = 120.0
    tick_s: float = 5.0
    cut_at: float = 0.45  # fraction of the run when the budget cut starts
    cut_until: float = 0.8
    cut_to: float = 0.6  # fraction of the contract budget during the cut
    notice_s: float = 10.0  # how long before the cut the daemon plans against it
    first_address: str = "127.1.0.1"

    def batches(self) -> list[MinerBatch]:
        lux = self.miners // 2
        wm = self.miners // 4
        return [
            MinerBatch("luxos", lux, "container-a", "Antminer S21"),
            MinerBatch("whatsminer", wm, "container-b", "Whatsminer M60S"),
            MinerBatch("braiins", self.miners - lux - wm, "transformer-2", "Antminer S19 XP"),
        ]

    def site_file(self, site: SimulatedSite, state_dir: Path, metrics_listen: str) -> dict[str, Any]:
        nominal = {b.circuit: b.count * _nominal_kw(b) for b in self.batches()}
        total = sum(nominal.values())
        trace = files("wattshift.simulators") / "traces" / HASHPRICE_TRACE
        return site.site_file(
            name="demo",
            budget_kw=round(total * 0.92, 1),
            reserve_kw=round(total * 0.01, 1),
            tick_seconds=self.tick_s,
            circuits=[
                {"name": "transformer-1", "limit_kw": round((nominal["container-a"] + nominal["container-b"]) * 0.95, 1),
                 "circuits": [
                     {"name": "container-a", "limit_kw": round(nominal["container-a"] * 1.02, 1)},
                     {"name": "container-b", "limit_kw": round(nominal["container-b"] * 0.9, 1)},
                 ]},
                {"name": "transformer-2", "limit_kw": round(nominal["transformer-2"] * 1.05, 1)},
            ],
            prices={
                "hashprice_usd_per_ph_day": {"source": "trace", "file": str(trace),
                                             "speedup": SECONDS_PER_TRACE_YEAR / self.duration_s},
                "power_usd_per_mwh": {"source": "fixed", "value": 40.0},
                "stale_after_seconds": 60,
            },
            policy={"name": "merit-order", "options": {"min_dwell_seconds": self.tick_s * 2}},
            drivers={"call_timeout_seconds": 5, "concurrency": 100, "confirm_timeout_seconds": 15},
            state_dir=str(state_dir),
            metrics_listen=metrics_listen,
        )

    def budget(self, site: SiteConfig, start: datetime) -> BudgetSchedule:
        schedule = BudgetSchedule(site.budget_watts, lead_seconds=self.notice_s)
        schedule.add(
            BudgetEvent(
                "demo-curtailment",
                site.budget_watts * self.cut_to,
                start + timedelta(seconds=self.duration_s * self.cut_at),
                start + timedelta(seconds=self.duration_s * self.cut_until),
            )
        )
        return schedule


def _nominal_kw(batch: MinerBatch) -> float:
    return SPECS[batch.spec_model].nominal_watts / 1000


@dataclass
class Ledger:
    """Energy and revenue from the simulators' true draw and hashrate, sampled over time."""

    site: SimulatedSite
    hashprice: float = 0.0  # $/PH/day, updated by the caller from the daemon's snapshot
    power_price: float = 0.0  # $/MWh
    energy_kwh: float = 0.0
    revenue_usd: float = 0.0
    power_cost_usd: float = 0.0
    peak_watts: float = 0.0
    peak_over_budget_watts: float = float("-inf")  # most the true draw went over the budget
    _last: float | None = field(default=None, repr=False)

    def sample(self, budget_watts: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        watts = self.site.true_watts()
        ths = sum(m.physics.hashrate_ths() for m in self.site.miners)
        self.peak_watts = max(self.peak_watts, watts)
        self.peak_over_budget_watts = max(self.peak_over_budget_watts, watts - budget_watts)
        if self._last is not None:
            dt = now - self._last
            self.energy_kwh += watts * dt / 3.6e6
            self.revenue_usd += ths / 1000 * self.hashprice * dt / 86400
            self.power_cost_usd += watts * dt / 3.6e9 * self.power_price
        self._last = now


async def sample_forever(ledger: Ledger, budget: BudgetSchedule, interval: float = 0.1) -> None:
    while True:
        ledger.sample(budget.at(datetime.now(UTC)))
        await asyncio.sleep(interval)
