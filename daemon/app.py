"""Assemble a running daemon from a site file: drivers, feeds, policy, recorders, loop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wattshift.drivers.prices import FixedPrice, PriceFeed, TracePrice
from wattshift.policies.base import make_policy

from .budget import BudgetSchedule
from .config import FixedPrice as FixedPriceConfig
from .config import SiteConfig, TracePrice as TracePriceConfig
from .controller import Controller
from .journal import AsyncJournal, journal_path
from .journal_entries import EntryKind
from .metrics import MetricsRecorder
from .recorder import FanOut, JournalRecorder, Recorder

if TYPE_CHECKING:
    from wattshift.drivers.pyasic_fleet import MinerFleet

Clock = Callable[[], float]


def make_feed(source: FixedPriceConfig | TracePriceConfig, name: str, base: Path, clock: Clock) -> PriceFeed:
    if isinstance(source, FixedPriceConfig):
        return FixedPrice(source.value, clock=clock, name=f"{name}:fixed")
    path = source.file if source.file.is_absolute() else base / source.file
    return TracePrice(path, clock=clock, speedup=source.speedup, loop=source.loop)


def make_fleet(site: SiteConfig) -> MinerFleet:
    # Imported here: pyasic is heavy and configures logging at import; `validate` needs neither.
    from wattshift.drivers.pyasic_fleet import MinerFleet

    return MinerFleet.from_site(site)


@dataclass
class Daemon:
    site: SiteConfig
    fleet: MinerFleet
    controller: Controller
    metrics: MetricsRecorder
    journal: AsyncJournal | None


@contextlib.asynccontextmanager
async def open_daemon(
    site: SiteConfig,
    *,
    base_dir: Path,
    dry_run: bool = False,
    journal: bool = True,
    serve_metrics: bool = False,
    budget: BudgetSchedule | None = None,
    clock: Clock = time.monotonic,
) -> AsyncIterator[Daemon]:
    """Everything the loop needs, opened in order and closed in reverse (journal last)."""
    fleet = make_fleet(site)
    metrics = MetricsRecorder()
    if serve_metrics:
        metrics.serve(site.metrics_listen)
    opened: AsyncJournal | None = None
    recorders: list[Recorder] = [metrics]
    if journal:
        opened = await AsyncJournal.open(journal_path(site.state_dir))
        recorders.insert(0, JournalRecorder(opened))
    try:
        controller = Controller(
            site,
            fleet,
            make_policy(site.policy.name, site.policy.options),
            hashprice=make_feed(site.prices.hashprice_usd_per_ph_day, "hashprice", base_dir, clock),
            power_price=make_feed(site.prices.power_usd_per_mwh, "power", base_dir, clock),
            budget=budget or BudgetSchedule(site.budget_watts),
            recorder=FanOut(*recorders),
            dry_run=dry_run,
            clock=clock,
        )
        if opened is not None:
            await opened.record(EntryKind.EVENT, f"started{' (dry run)' if dry_run else ''}: site {site.name}",
                                data={"budget_watts": site.budget_watts, "miners": len(controller.miner_ids)})
        await fleet.discover()
        yield Daemon(site, fleet, controller, metrics, opened)
    finally:
        await fleet.close()
        if opened is not None:
            await opened.record(EntryKind.EVENT, f"stopped: site {site.name}")
            await opened.aclose()
