"""Strike price: mine at full power while power is cheap, curtail mining while it is dear.

The familiar baseline of mining-fleet tools (Foreman-style): a strike price with hysteresis and
debounce. Mining stops once the power price has stayed above ``strike + hysteresis`` for
``curtail_after_minutes`` in a row, and starts again once it has stayed below
``strike - hysteresis`` for ``restore_after_minutes`` in a row. In between, nothing changes.

Otherwise every miner runs at its highest setting, within every limit: most efficient first,
so when the budget is short the least efficient are the ones shed. Switching is not free: a
miner stays on (off) through its minimum up (down) time unless a limit sheds it, and a sleeping
miner is started only if, at today's hashprice and power price, it earns back its start cost
(wear, boot energy, the boot time's lost revenue) within ``start_horizon_seconds``. GPU nodes with a job run at
full caps (paid AI work beats mining at any power price that curtails mining); firm jobs are
never touched.

Why the state is passed in (see :mod:`wattshift.policies.base`): debounce needs to know since
when the price has been above the line, which one snapshot cannot say. :class:`StrikeState` is
that memory: three values, JSON-able, advanced by the pure :func:`advance` from the snapshot's
time and price. ``decide(snapshot, state)`` returns the next one in ``Allocation.state``; the
loop's :class:`~wattshift.policies.base.Carried` hands it back, a back-test threads it through
its replay, and with no state (``wattshift plan``, a restart) the policy starts from the
devices as they are: curtailed if every controllable miner is already off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wattshift.model.jobs import JobState
from wattshift.model.snapshot import GpuNodeState, MinerState, SiteSnapshot

from .base import Allocation, Target, parse_options
from .fill import Fill, dwelling, fixed, gpu_settings, miner_settings
from .ladders import revenue_usd_per_hour


class StrikePriceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strike_usd_per_mwh: float = Field(default=100.0, ge=-1000, le=100_000)
    hysteresis_usd_per_mwh: float = Field(default=5.0, ge=0)
    curtail_after_minutes: float = Field(default=5.0, ge=0, le=1440)
    restore_after_minutes: float = Field(default=10.0, ge=0, le=1440)
    min_dwell_seconds: float = Field(default=300.0, ge=0)
    # A start must pay for itself within this long (as merit-order's miner_horizon_seconds).
    start_horizon_seconds: float = Field(default=14_400.0, gt=0)


@dataclass(frozen=True, slots=True)
class StrikeState:
    """Curtailed or not, and since when the price has been beyond each line (None: it is not)."""

    curtailed: bool = False
    above_since: datetime | None = None
    below_since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "curtailed": self.curtailed,
            "above_since": self.above_since.isoformat() if self.above_since else None,
            "below_since": self.below_since.isoformat() if self.below_since else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StrikeState:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if isinstance(value, str) else None

        return cls(bool(data.get("curtailed", False)), when("above_since"), when("below_since"))


def advance(state: StrikeState, at: datetime, price: float | None, options: StrikePriceOptions) -> StrikeState:
    """The state after seeing ``price`` at ``at``. ``price`` None (missing or stale): no switch,
    and the debounce starts over, because we cannot tell the price stayed beyond the line."""
    if price is None:
        return StrikeState(state.curtailed)
    upper = options.strike_usd_per_mwh + options.hysteresis_usd_per_mwh
    lower = options.strike_usd_per_mwh - options.hysteresis_usd_per_mwh
    if price > upper:
        since = state.above_since if state.above_since is not None and state.above_since <= at else at
        held = (at - since).total_seconds() >= options.curtail_after_minutes * 60
        return StrikeState(state.curtailed or held, since, None)
    if price < lower:
        since = state.below_since if state.below_since is not None and state.below_since <= at else at
        held = (at - since).total_seconds() >= options.restore_after_minutes * 60
        return StrikeState(state.curtailed and not held, None, since)
    return StrikeState(state.curtailed)


def initial_state(snapshot: SiteSnapshot) -> StrikeState:
    """No memory: believe the devices. Every controllable miner off reads as curtailed."""
    miners = [m for m in snapshot.miners if not fixed(m)]
    return StrikeState(curtailed=bool(miners) and not any(m.is_on for m in miners))


class StrikePricePolicy:
    name = "strike-price"
    stateful = True

    def __init__(self, options: StrikePriceOptions | None = None) -> None:
        self.options = options or StrikePriceOptions()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> StrikePricePolicy:
        return cls(parse_options(StrikePriceOptions, options, cls.name))

    def decide(self, snapshot: SiteSnapshot, state: Mapping[str, Any] | None = None) -> Allocation:
        o = self.options
        prices = snapshot.prices
        price = prices.power_usd_per_mwh
        trusted = price is not None and not prices.power_stale
        before = StrikeState.from_json(state) if state else initial_state(snapshot)
        now = advance(before, snapshot.at, price if trusted else None, o)
        fill = Fill(snapshot)
        why = self._why(now, snapshot.at, price, trusted)

        gpu_targets = [self._gpu(fill, n) for n in snapshot.gpu_nodes if not fixed(n)]
        # Most efficient first: when the budget is short, the least efficient are left off.
        miners = sorted(
            (m for m in snapshot.miners if not fixed(m)), key=lambda m: (m.curve.joules_per_th, m.device_id)
        )
        for m in miners:
            fill.targets[m.device_id] = self._miner(fill, m, snapshot, curtailed=now.curtailed, why=why)

        uncontrolled = [fill.targets[d.device_id] for d in snapshot.loads if fixed(d)]
        order = uncontrolled + gpu_targets + [fill.targets[m.device_id] for m in miners]
        on = sum(1 for m in miners if fill.targets[m.device_id].watts > 0)
        summary = f"strike-price: {'curtailed' if now.curtailed else 'mining'}, {on}/{len(miners)} miners on; {why}"
        return Allocation(tuple(order), summary, state=now.to_json())

    def _why(self, state: StrikeState, at: datetime, price: float | None, trusted: bool) -> str:
        o = self.options
        line = f"strike ${o.strike_usd_per_mwh:.0f}±{o.hysteresis_usd_per_mwh:.0f}/MWh"
        if not trusted:
            return f"power price {'stale' if price is not None else 'unknown'}, holding ({line})"
        head = f"power ${price:.0f}/MWh"
        if state.above_since is not None:
            minutes = (at - state.above_since).total_seconds() / 60
            if state.curtailed:
                return f"{head} above {line} for {minutes:.0f} min: curtailed"
            return f"{head} above {line} for {minutes:.0f} of {o.curtail_after_minutes:.0f} min (debounce)"
        if state.below_since is not None:
            minutes = (at - state.below_since).total_seconds() / 60
            if state.curtailed:
                return f"{head} below {line} for {minutes:.0f} of {o.restore_after_minutes:.0f} min (debounce)"
            return f"{head} below {line}"
        return f"{head} within {line}: {'stays curtailed' if state.curtailed else 'keeps mining'}"

    def _miner(self, fill: Fill, m: MinerState, snapshot: SiteSnapshot, *, curtailed: bool, why: str) -> Target:
        # No flapping: a recent on/off change stands until its dwell time (or the miner's
        # minimum up or down time) is over; a limit may still shed it below.
        sw = m.switching
        dwell = max(self.options.min_dwell_seconds, sw.min_up_seconds if m.is_on else sw.min_down_seconds)
        held = dwelling(m, snapshot, dwell) and m.is_on == curtailed
        mining = m.is_on if held else not curtailed
        tail = f"holding {'on' if mining else 'off'} (dwell time); {why}" if held else why
        if not mining:
            return Target(m.device_id, 0.0, f"{m.label} -> off: {tail}")
        lowest, highest, steps = miner_settings(m)
        if not m.is_on:
            unpaid = self._unpaid_start(m, snapshot, highest)
            if unpaid:
                return Target(m.device_id, 0.0, f"{m.label} -> off: {unpaid}; {why}")
        watts = fill.grant(m, lowest, highest, steps)
        if watts <= 0:
            return Target(m.device_id, 0.0, f"{m.label} -> off: {fill.tightest(m)}")
        top = " (max)" if watts >= highest else f" ({fill.tightest(m)})"
        return Target(m.device_id, watts, f"{m.label} -> {watts:.0f} W{top}: {tail}")

    def _unpaid_start(self, m: MinerState, snapshot: SiteSnapshot, watts: float) -> str | None:
        """Why a start would not earn back its cost within the horizon (None: it would, or the
        prices cannot tell, and the strike decides alone)."""
        prices = snapshot.prices
        hashprice, power = prices.hashprice_usd_per_ph_day, prices.power_usd_per_mwh
        if hashprice is None or power is None or prices.hashprice_stale or prices.power_stale:
            return None
        revenue = revenue_usd_per_hour(m, watts, hashprice)
        hours = self.options.start_horizon_seconds / 3600
        earned = (revenue - (watts - m.idle_watts) / 1e6 * power) * hours
        cost = m.switching.start_usd(power, revenue)
        if earned >= cost:
            return None
        return f"a start costs ${cost:.2f} and earns ${earned:.2f} in {hours:g} h"

    def _gpu(self, fill: Fill, n: GpuNodeState) -> Target:
        target = gpu_full_caps(fill, n)
        fill.targets[n.device_id] = target
        return target


def gpu_full_caps(fill: Fill, n: GpuNodeState) -> Target:
    """A node with a job at full caps, or the highest caps that fit; no job: off."""
    if n.job is None or n.job.state.finished or n.job.state is JobState.UNKNOWN:
        return Target(n.device_id, 0.0, f"{n.label} -> off: no job")
    lowest, highest, _ = gpu_settings(n)
    watts = fill.grant(n, lowest, highest, None)
    if watts <= 0:
        return Target(n.device_id, 0.0, f"{n.label} -> off (job {n.job.name} held): {fill.tightest(n)}")
    rate = n.job.value_usd_per_hour
    value = rate / watts * 1e6 if rate is not None and watts > 0 else None
    worth = f"job {n.job.name} ({n.job.tier.value})" + (f" worth ${value:.0f}/MWh" if value is not None else "")
    top = " (full caps)" if watts >= highest else f" (cap {n.cap_for(watts):.0f} W/GPU: {fill.tightest(n)})"
    return Target(n.device_id, watts, f"{n.label} -> {watts:.0f} W{top}: {worth}", value)

