"""From driver readings to the immutable :class:`SiteSnapshot` a policy sees.

This is where "unknown means worst case" is decided for each miner: no answer, garbage or an
ignored command leave the miner counted at the most it can draw (DESIGN.md invariant 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wattshift.drivers.base import DeviceError, Failure, MinerCapability, MinerReading, PowerControl
from wattshift.policies.efficiency import curve_for

from .config import SITE_CIRCUIT, MinerGroup, SiteConfig
from .model import MinerState, Prices, SiteSnapshot

# An unidentified miner could be anything on the shelf; count it as a large air-cooled unit
# unless the operator gives its nameplate (max_kw in the site file).
UNKNOWN_MAX_WATTS = 4000.0


@dataclass(frozen=True, slots=True)
class MinerSlot:
    """Where a configured miner sits and what the operator told us about it."""

    device_id: str
    circuit: str
    group: MinerGroup

    @property
    def nameplate_watts(self) -> float | None:
        return self.group.max_kw * 1000.0 if self.group.max_kw else None


def miner_slots(site: SiteConfig) -> dict[str, MinerSlot]:
    return {
        host: MinerSlot(host, group.circuit or SITE_CIRCUIT, group)
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
    so its readings are not trusted to predict what it will do next."""
    reading = result if isinstance(result, MinerReading) else None
    failure = result.failure if isinstance(result, DeviceError) else None
    if result is None or (reading is not None and capability is None):
        failure = Failure.UNIDENTIFIED
    elif ignored and failure is None:
        failure = Failure.IGNORED
    model = (reading.model if reading else None) or slot.group.model
    max_watts = slot.nameplate_watts or (capability.max_watts if capability else UNKNOWN_MAX_WATTS)
    cap = capability or MinerCapability(PowerControl.ON_OFF, max_watts, max_watts, can_sleep=False)
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
    )


def build_snapshot(
    site: SiteConfig,
    miners: list[MinerState],
    prices: Prices,
    *,
    budget_watts: float,
    at: datetime,
    clock: float,
) -> SiteSnapshot:
    return SiteSnapshot(
        at=at,
        clock=clock,
        budget_watts=max(0.0, budget_watts - site.reserve_watts),
        circuit_limits=site.circuit_limits(),
        circuit_parents=site.circuit_parents(),
        miners=tuple(miners),
        prices=prices,
    )


def quote_prices(
    hashprice: tuple[float, float] | None,
    power: tuple[float, float] | None,
    *,
    clock: float,
    stale_after: float,
) -> Prices:
    """Prices from the last good (value, time) of each feed; old ones are marked stale."""

    def stale(quote: tuple[float, float] | None) -> bool:
        return quote is None or clock - quote[1] > stale_after

    return Prices(
        hashprice_usd_per_ph_day=hashprice[0] if hashprice else None,
        power_usd_per_mwh=power[0] if power else None,
        hashprice_stale=stale(hashprice),
        power_stale=stale(power),
    )
