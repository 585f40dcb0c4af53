"""lookahead in the assembled daemon, against simulated LuxOS miners (the real pyasic underneath).

The daemon attaches the announced budget to the snapshot of a policy that plans (live, or in
shadow beside merit-order), and the plan sees a cut coming before it starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.runtime.app import Daemon, open_daemon
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.simulators.site import MinerBatch, SimulatedSite

ROOT = Path(__file__).resolve().parents[2]
FIRST_MINER = "127.0.191.1"


@asynccontextmanager
async def site_with(tmp_path: Path, budget: BudgetSchedule, **fields: object) -> AsyncIterator[Daemon]:
    async with SimulatedSite([MinerBatch("luxos", 3)], first_address=FIRST_MINER) as sim:
        site = SiteConfig.model_validate(sim.site_file(
            name="la", budget_kw=20, tick_seconds=5, state_dir=str(tmp_path / "state"),
            prices={"power_usd_per_mwh": {"source": "fixed", "value": 30.0}},
            drivers={"call_timeout_seconds": 1.0, "confirm_timeout_seconds": 2.0}, **fields,
        ))
        async with open_daemon(site, base_dir=tmp_path, budget=budget, serve_metrics=False) as daemon:
            yield daemon


def announced_cut() -> BudgetSchedule:
    now = datetime.now(UTC)
    schedule = BudgetSchedule(20_000)
    schedule.add(BudgetEvent("dr", 1_000, now + timedelta(minutes=40), now + timedelta(hours=2)))
    return schedule


async def test_the_live_lookahead_plans_over_the_announced_cut(tmp_path):
    async with site_with(tmp_path, announced_cut(), policy={"name": "lookahead", "options": {"horizon_hours": 3}}) \
            as daemon:
        report = await daemon.controller.run_once()
    forecast = report.snapshot.forecast
    assert len(forecast) == 36  # 3 h in 5-minute steps
    assert forecast[0].budget_watts == 20_000 and min(f.budget_watts for f in forecast) == 1_000
    assert report.allocation.summary.startswith("lookahead: plan of 3 h made 0 s ago"), report.allocation.summary


async def test_a_lookahead_shadow_beside_merit_order_reads_the_forecast(tmp_path):
    async with site_with(tmp_path, announced_cut(),
                         shadow_policy_file=str(ROOT / "deploy" / "policies" / "lookahead.yaml")) as daemon:
        report = await daemon.controller.run_once()
        assert report.allocation.summary.startswith(tuple("0123456789"))  # merit-order's "n/m miners on"
        assert len(report.snapshot.forecast) == 12 * 12  # the shadow's 12 h
