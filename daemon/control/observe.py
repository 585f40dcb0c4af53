"""From driver readings to the immutable :class:`SiteSnapshot` a policy sees.

This is where "unknown means worst case" is decided for each miner: no answer, garbage or an
ignored command leave the miner counted at the most it can draw (DESIGN.md invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from wattshift.daemon.config.gpu import GpuNodeConfig, JobsConfig
from wattshift.daemon.config.site import MinerGroup, SiteConfig
from wattshift.daemon.config.switching import switching_for
from wattshift.drivers.base import DeviceError
from wattshift.drivers.jobs import JobStatus
from wattshift.model.budget import BudgetSchedule
from wattshift.model.efficiency import curve_for
from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.forecast import budget_outlook
from wattshift.model.gpu import GpuLimits
from wattshift.model.jobs import FlexTier
from wattshift.model.miner import (
    UNKNOWN_MINER_WATTS,
    Failure,
    MinerCapability,
    MinerReading,
    PowerControl,
)
from wattshift.model.snapshot import (
    GpuJob,
    GpuNodeState,
    MinerState,
    Prices,
    SiteSnapshot,
)
from wattshift.model.specs import DEFAULT_SWITCHING, MinerSwitching
from wattshift.policies.base import forecast_seconds

from .gpu_fleet import NodeReading

# An unidentified miner could be anything on the shelf (the drivers' figure).
UNKNOWN_MAX_WATTS = UNKNOWN_MINER_WATTS


@dataclass(frozen=True, slots=True)
class MinerSlot:
    """Where a configured miner sits and what the operator told us about it."""

    device_id: str
    circuit: str
    group: MinerGroup
    # Boot, wear and min up/down: the group's model's figures, with the file's overrides.
    switching: MinerSwitching = DEFAULT_SWITCHING

    @property
    def nameplate_watts(self) -> float | None:
        return self.group.max_kw * 1000.0 if self.group.max_kw else None


def miner_slots(site: SiteConfig) -> dict[str, MinerSlot]:
    return {
        host: MinerSlot(host, group.circuit or SITE_CIRCUIT, group, switching_for(group.model, group.switching))
        for group in site.miners
        for host in group.hosts()
    }


def miner_state(
    slot: MinerSlot,
    result: MinerReading | DeviceError | None,
    capability: MinerCapability | None,
    *,
    state_since: float | None,
    ignored: bool = False,
    waking: bool = False,
) -> MinerState:
    """One miner's state. ``ignored``: its last command was acknowledged but not carried out,
    so its readings are not trusted to predict what it will do next. ``waking``: told to wake
    and not yet seen running; its hashboards boot for minutes, drawing little and hashing
    nothing, and it is counted as on, at the limit it will come up at (its worst case)."""
    reading = result if isinstance(result, MinerReading) else None
    if reading is not None and capability is not None and capability.control is PowerControl.ON_OFF:
        # An on/off miner has one setting, whatever limit its firmware reads (a Whatsminer
        # without power limiting reads 0): that setting is what it comes up at.
        reading = replace(reading, limit_watts=capability.max_watts)
    failure = result.failure if isinstance(result, DeviceError) else None
    if result is None or (reading is not None and capability is None):
        failure = Failure.UNIDENTIFIED
    elif ignored and failure is None:
        failure = Failure.IGNORED
    model = (reading.model if reading else None) or slot.group.model
    max_watts = slot.nameplate_watts or (capability.max_watts if capability else UNKNOWN_MAX_WATTS)
    cap = capability or MinerCapability(PowerControl.ON_OFF, max_watts, max_watts, can_sleep=False)
    # Booting by the firmware's word: on, at its limit, whether or not this loop woke it.
    waking = waking or (reading is not None and reading.booting)
    return MinerState(
        device_id=slot.device_id,
        circuit=slot.circuit,
        model=model,
        capability=cap,
        curve=curve_for(model, reading, max_watts),
        reading=reading,
        failure=failure,
        max_watts=max_watts,
        state_since=state_since,
        waking=waking,
        switching=slot.switching,
    )


def build_snapshot(
    site: SiteConfig,
    miners: list[MinerState],
    prices: Prices,
    *,
    budget_watts: float,
    at: datetime,
    clock: float,
    gpu_nodes: list[GpuNodeState] | None = None,
) -> SiteSnapshot:
    return SiteSnapshot(
        at=at,
        clock=clock,
        budget_watts=max(0.0, budget_watts - site.reserve_watts),
        circuit_limits=site.circuit_limits(),
        circuit_parents=site.circuit_parents(),
        miners=tuple(miners),
        prices=prices,
        gpu_nodes=tuple(gpu_nodes or ()),
    )


FORECAST_STEP_SECONDS = 300.0  # the announced budget's resolution in a live forecast


def attach_forecast(
    snapshot: SiteSnapshot, readers: Sequence[object], schedule: BudgetSchedule, now: datetime, *,
    less_watts: float, price_at: Callable[[datetime], float | None] | None = None,
) -> SiteSnapshot:
    """The snapshot with the hours ahead its readers ask for (the live policy, a shadow candidate:
    the longest ``forecast_seconds`` of them; none: the snapshot as it is): the
    budget with every announced event, less ``less_watts`` (the reserve and what the devices
    cannot see), and the power price where the feed publishes it (a time-of-use tariff:
    ``drivers.prices.published_price``); elsewhere the policy holds the price now."""
    seconds = max((forecast_seconds(r) for r in readers), default=0.0)
    if seconds <= 0:
        return snapshot
    outlook = budget_outlook(schedule, now, seconds=seconds, step_seconds=FORECAST_STEP_SECONDS,
                             less_watts=less_watts, price_at=price_at)
    return replace(snapshot, forecast=outlook)


def quote_prices(
    hashprice: tuple[float, float] | None,
    power: tuple[float, float] | None,
    *,
    clock: float,
    stale_after: float,
    gpu_rates: Mapping[str, tuple[float, float]] | None = None,
) -> Prices:
    """Prices from the last good (value, time) of each feed; old ones are marked stale."""

    def stale(quote: tuple[float, float] | None) -> bool:
        return quote is None or clock - quote[1] > stale_after

    gpu_rates = gpu_rates or {}
    return Prices(
        hashprice_usd_per_ph_day=hashprice[0] if hashprice else None,
        power_usd_per_mwh=power[0] if power else None,
        hashprice_stale=stale(hashprice),
        power_stale=stale(power),
        gpu_rates_usd_per_gpu_hour={model: quote[0] for model, quote in gpu_rates.items()},
        gpu_rates_stale=frozenset(model for model, quote in gpu_rates.items() if stale(quote)),
    )


def gpu_node_state(
    node: GpuNodeConfig,
    reading: NodeReading | None,
    card_limits: GpuLimits,
    jobs: JobsConfig,
    prices: Prices,
    *,
    state_since: float | None,
    waking: bool = False,
    distrusted: bool = False,
) -> GpuNodeState:
    """One GPU node: its cards as read, its job valued by its class (contract or market rate)."""
    readings = reading.readings if reading is not None else ()
    failure: Failure | None = None
    if reading is None or reading.runner_failure is not None:
        failure = Failure.NO_ANSWER
    elif reading.failures:
        failure = reading.failures[0].failure
    elif len(readings) != node.gpu_count:
        failure = Failure.NO_ANSWER  # a card missing from the bus is a lost card
    elif distrusted:
        failure = Failure.IGNORED
    status = reading.job if reading is not None else None
    model = next((r.model for r in readings if r.model), None)
    return GpuNodeState(
        device_id=node.name,
        circuit=node.circuit,
        gpu_model=model,
        gpu_count=node.gpu_count,
        host_idle_watts=node.host_idle_watts,
        host_max_watts=node.host_max_watts,
        gpu_idle_watts=node.gpu_idle_watts,
        cap_min_watts=card_limits.min_watts,
        cap_max_watts=card_limits.max_watts,
        readings=readings,
        failure=failure,
        job=gpu_job(status, jobs, prices) if status is not None else None,
        state_since=state_since,
        waking=waking,
    )


def gpu_job(status: JobStatus, jobs: JobsConfig, prices: Prices) -> GpuJob:
    job_class = jobs.class_for(status.name)
    if job_class is None:
        return GpuJob(status.job_id, status.name, status.state, FlexTier.FIRM, status.gpus or 1, None)
    rate, stale = job_class.rate_usd_per_gpu_hour, False
    if job_class.market is not None:
        rate = prices.gpu_rates_usd_per_gpu_hour.get(job_class.market)
        stale = rate is None or job_class.market in prices.gpu_rates_stale
    return GpuJob(
        status.job_id, status.name, status.state, job_class.tier, status.gpus or 1, rate, stale,
        job_class.switching, job_class.min_run_seconds,
    )
