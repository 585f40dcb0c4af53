"""A simulated site and a daemon pointed at it, judged by the simulators' true draw."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.config.switching import SwitchingOverride
from wattshift.daemon.runtime.app import open_daemon
from wattshift.model.budget import BudgetSchedule
from wattshift.simulators.gpu_site import SimulatedGpuSite
from wattshift.simulators.site import MinerBatch, SimulatedSite, TruthMonitor

FREE_SWITCHING = {"wear_usd_per_cycle": 0.0, "min_up_seconds": 0.0, "min_down_seconds": 0.0}


@contextlib.asynccontextmanager
async def running_site(
    batches: list[MinerBatch],
    tmp_path: Path,
    *,
    first_address: str,
    budget_kw: float,
    circuits: list[dict[str, Any]] | None = None,
    power_price: float = 40.0,
    policy_options: dict[str, Any] | None = None,
    dry_run: bool = False,
    gpus: SimulatedGpuSite | None = None,
    runner: Any = None,
    site_extra: dict[str, Any] | None = None,
    drivers: dict[str, Any] | None = None,
    identify: bool = False,
    switching: dict[str, float] | None = None,
) -> AsyncIterator[tuple[SimulatedSite, Any, BudgetSchedule, TruthMonitor]]:
    """``gpus`` (entered by the caller) and ``runner`` add GPU nodes; ``site_extra`` adds
    site-file keys (job classes, GPU rates); ``drivers`` overrides the short test deadlines;
    ``identify`` leaves every miner for pyasic to identify, as an operator who names no firmware;
    ``switching`` is every miner group's override (default: no wear and no minimum up or down
    time, so that a test of seconds is not held for the table's 15 minutes)."""
    sim = SimulatedSite(batches, first_address=first_address, physics_options={"ramp_watts_per_s": 2000.0})
    async with sim:
        site = SiteConfig.model_validate(
            sim.site_file(
                name="test",
                budget_kw=budget_kw,
                circuits=circuits or [],
                prices={"power_usd_per_mwh": {"source": "fixed", "value": power_price}},
                policy={"name": "merit-order", "options": {"min_dwell_seconds": 0, **(policy_options or {})}},
                drivers={"call_timeout_seconds": 1.0, "confirm_timeout_seconds": 6.0, **(drivers or {})},
                state_dir=str(tmp_path),
                gpu_nodes=gpus.site_file_nodes() if gpus is not None else [],
                **(site_extra or {}),
            )
        )
        if identify:
            site = site.model_copy(update={"miners": [g.model_copy(update={"firmware": "auto"}) for g in site.miners]})
        override = SwitchingOverride.model_validate(FREE_SWITCHING if switching is None else switching)
        site = site.model_copy(update={"miners": [g.model_copy(update={"switching": override}) for g in site.miners]})
        budget = BudgetSchedule(site.budget_watts, lead_seconds=30)

        limits = site.circuit_limits()
        truth = TruthMonitor(
            sim, site.circuit_parents(), lambda: budget.limits_at(limits, datetime.now(UTC)), interval=0.02, gpus=gpus
        )
        async with open_daemon(site, base_dir=tmp_path, budget=budget, dry_run=dry_run, runner=runner) as daemon:
            async with truth:
                yield sim, daemon, budget, truth


def assert_never_over(truth: TruthMonitor) -> None:
    assert truth.samples > 10, "the monitor did not run"
    assert truth.excursions == [], f"over a limit: {truth.excursions[:3]}"
