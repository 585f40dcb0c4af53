"""The demo scenario: a simulated site of mixed miners, a replayed hashprice trace, and a
budget cut announced part way, run under the real daemon. Also the ledger that keeps score
from the simulators' *true* draw, not from what the daemon believes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from wattshift.daemon.config.site import SiteConfig
from wattshift.drivers.jobs import ActionTimes, JobSpec
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.specs import SPECS
from wattshift.simulators.gpu_site import GpuNodeSpec, SimulatedGpuSite
from wattshift.simulators.jobs import ScriptedJob, SimulatedJobRunner
from wattshift.simulators.site import MinerBatch, SimulatedSite

HASHPRICE_TRACE = "hashprice_2025_daily.csv"
GPU_RATE_TRACE = "gpu_rate_h100_2025.csv"
POLICY_FILE = "policy.yaml"
GPU_NODE_KW = 1.5 + 8 * 0.7  # an 8x H100 server at full caps
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
    gpu_nodes: int = 4
    # Cooling and transformer losses, as a fraction of the contract budget: the site meter
    # sees them, no device reports them. Only a site with a meter (the demo with MQTT) has
    # them, since only a meter lets the daemon learn them.
    unmetered_fraction: float = 0.02

    def gpu_specs(self) -> list[GpuNodeSpec]:
        return [GpuNodeSpec(f"gpu-{i + 1:02d}", "gpu-hall") for i in range(self.gpu_nodes)]

    def jobs(self) -> list[ScriptedJob]:
        """AI work arriving and ending: a rental on contract for the whole run, a training run
        for most of it, a preemptible batch job for a while. All wait, held, for power."""
        d = self.duration_s
        plan = [
            (0.05, "rent-acme", None),  # firm: an on-demand rental, never curtailed
            (0.15, "train-llm-7b", 0.55 * d),
            (0.30, "batch-embed", 0.30 * d),
        ]
        return [
            ScriptedJob(d * at, JobSpec(name, gpus=8, node=f"gpu-{i + 1:02d}", hold=True), run)
            for i, (at, name, run) in enumerate(plan[: self.gpu_nodes])
        ]

    def runner(self) -> SimulatedJobRunner:
        quick = ActionTimes(suspend_release=1.0, resume_draw=1.0, requeue_release=2.0, start_draw=2.0)
        return SimulatedJobRunner({n.name: 8 for n in self.gpu_specs()}, times=quick, script=self.jobs())

    def batches(self) -> list[MinerBatch]:
        lux = self.miners // 2
        wm = self.miners // 4
        return [
            MinerBatch("luxos", lux, "container-a", "Antminer S21"),
            MinerBatch("whatsminer", wm, "container-b", "Whatsminer M60S"),
            MinerBatch("braiins", self.miners - lux - wm, "transformer-2", "Antminer S19 XP"),
        ]

    def site_file(
        self,
        site: SimulatedSite,
        state_dir: Path,
        metrics_listen: str,
        gpus: SimulatedGpuSite | None = None,
        mqtt: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        nominal = {b.circuit: b.count * _nominal_kw(b) for b in self.batches()}
        total = sum(nominal.values())
        traces = files("wattshift.simulators") / "traces"
        trace = traces / HASHPRICE_TRACE
        speedup = SECONDS_PER_TRACE_YEAR / self.duration_s
        gpu_circuit = [{"name": "gpu-hall", "limit_kw": round(self.gpu_nodes * GPU_NODE_KW * 1.05, 1)}]
        return site.site_file(
            name="demo",
            budget_kw=round(total * 0.92, 1),
            reserve_kw=round(total * 0.01, 1),
            tick_seconds=self.tick_s,
            circuits=[
                {"name": "transformer-1",
                 "limit_kw": round((nominal["container-a"] + nominal["container-b"]) * 0.95, 1),
                 "circuits": [
                     {"name": "container-a", "limit_kw": round(nominal["container-a"] * 1.02, 1)},
                     {"name": "container-b", "limit_kw": round(nominal["container-b"] * 0.9, 1)},
                 ]},
                {"name": "transformer-2", "limit_kw": round(nominal["transformer-2"] * 1.05, 1)},
                *(gpu_circuit if gpus is not None else []),
            ],
            gpu_nodes=gpus.site_file_nodes() if gpus is not None else [],
            jobs={"classes": [
                {"match": "rent-*", "tier": "firm", "rate_usd_per_gpu_hour": 2.40},
                {"match": "train-*", "tier": "suspendable", "market": "H100", "min_run_seconds": self.tick_s * 2},
                {"match": "*", "tier": "preemptible", "market": "H100", "restart_seconds": 300, "penalty_usd": 5},
            ]} if gpus is not None else {},
            prices={
                "hashprice_usd_per_ph_day": {"source": "trace", "file": str(trace), "speedup": speedup},
                "power_usd_per_mwh": {"source": "fixed", "value": 40.0},
                "gpu_rates_usd_per_gpu_hour": {
                    "H100": {"source": "trace", "file": str(traces / GPU_RATE_TRACE), "speedup": speedup},
                },
                "stale_after_seconds": 60,
            },
            policy_file=str(state_dir / POLICY_FILE),
            drivers={"call_timeout_seconds": 5, "concurrency": 100, "confirm_timeout_seconds": 15},
            state_dir=str(state_dir),
            metrics_listen=metrics_listen,
            **({"mqtt": mqtt} if mqtt is not None else {}),
        )

    def unmetered_watts(self, site: SiteConfig, metered: bool) -> float:
        return site.budget_watts * self.unmetered_fraction if metered else 0.0

    def write_policy_file(self, state_dir: Path) -> Path:
        """The demo's policy, as an operator's file: edit it while the demo runs and the next
        tick uses it (or a bad edit is refused and journaled). An existing one is kept."""
        path = state_dir / POLICY_FILE
        if not path.exists():
            state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(
                "# wattshift demo policy: edit me while the demo runs\n"
                "policy: merit-order\n"
                f"options:\n  min_dwell_seconds: {self.tick_s * 2:g}\n  hysteresis_usd_per_mwh: 2\n",
                encoding="utf-8",
            )
        return path

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
    gpus: SimulatedGpuSite | None = None
    unmetered_watts: float = 0.0  # cooling and losses: in the peak, in neither class's energy
    hashprice: float = 0.0  # $/PH/day, updated by the caller from the daemon's snapshot
    power_price: float = 0.0  # $/MWh
    ai_usd_per_hour: float = 0.0  # what the running jobs earn, updated by the caller
    energy_kwh: float = 0.0
    revenue_usd: float = 0.0
    ai_energy_kwh: float = 0.0
    ai_revenue_usd: float = 0.0
    ai_power_cost_usd: float = 0.0
    power_cost_usd: float = 0.0
    peak_watts: float = 0.0
    peak_over_budget_watts: float = float("-inf")  # most the true draw went over the budget
    _last: float | None = field(default=None, repr=False)

    def sample(self, budget_watts: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        miners = self.site.true_watts()
        ai = 0.0
        if self.gpus is not None:
            self.gpus.advance()
            ai = self.gpus.true_watts()
        watts = miners + ai + self.unmetered_watts
        ths = sum(m.physics.hashrate_ths() for m in self.site.miners)
        self.peak_watts = max(self.peak_watts, watts)
        self.peak_over_budget_watts = max(self.peak_over_budget_watts, watts - budget_watts)
        if self._last is not None:
            dt = now - self._last
            self.energy_kwh += miners * dt / 3.6e6
            self.ai_energy_kwh += ai * dt / 3.6e6
            self.revenue_usd += ths / 1000 * self.hashprice * dt / 86400
            self.ai_revenue_usd += self.ai_usd_per_hour * dt / 3600
            self.power_cost_usd += miners * dt / 3.6e9 * self.power_price
            self.ai_power_cost_usd += ai * dt / 3.6e9 * self.power_price
        self._last = now


class LimitsToMeet:
    """The circuit limits the demo judges the true draw against, as of now.

    The scenario's own events, known from the start, count from their start: the daemon has
    their notice. An event that arrives while the demo runs (an MQTT budget command) counts
    from its start or ``response_seconds`` after it arrived, whichever is later: a cut that
    takes effect the moment it is sent leaves the site the time any controller needs to see it
    and ramp miners down, and the command's ``reached`` reply says how long it really took.
    An event arrives when this is first called after it was added: the demo calls it many times
    a second.
    """

    def __init__(self, budget: BudgetSchedule, circuit_limits: Mapping[str, float], response_seconds: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.budget = budget
        self.circuit_limits = dict(circuit_limits)
        self.response = timedelta(seconds=response_seconds)
        self._clock = clock
        long_ago = datetime.min.replace(tzinfo=UTC)
        self._seen: dict[BudgetEvent, datetime] = dict.fromkeys(budget.events(), long_ago)

    def __call__(self) -> dict[str, float]:
        now = self._clock()
        judged = BudgetSchedule(self.budget.contract_watts, lead_seconds=0)
        for event in self.budget.events():
            seen = self._seen.setdefault(event, now)
            start = max(event.start, seen + self.response)
            if event.end is None or start < event.end:
                judged.add(replace(event, start=start))
        return judged.limits_at(self.circuit_limits, now)


async def sample_forever(ledger: Ledger, limits: Callable[[], Mapping[str, float]], interval: float = 0.1) -> None:
    while True:
        ledger.sample(limits()["site"])
        await asyncio.sleep(interval)
