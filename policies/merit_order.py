"""Merit order over miners: every watt goes where it earns most, and only if it beats its price.

Each miner's power range is cut into increments (its minimum first, then steps up to its
maximum, or its profiles, or on/off). An increment's value is the revenue it adds, in $/MWh of
the watts it adds, at the current hashprice. Because hashrate is concave in power, the first
increment of a miner is its best, and taking increments best-first across the whole site is
water-filling: marginal values end up equal, least efficient miners are the ones left off.
An increment is taken only while its value beats the power price and it fits every circuit on
its path, after the worst case of every miner we cannot control has been counted.

No flapping (DESIGN.md invariant 7): a running miner stays on until its value falls
``hysteresis_usd_per_mwh`` below the price, an idle one starts only when it beats the price by
as much, and neither changes state within ``min_dwell_seconds`` of the last change, unless a limit
forces it.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattshift.daemon.limits import LimitTree
from wattshift.daemon.model import IDLE_WATTS, MinerState, SiteSnapshot
from wattshift.drivers.base import PowerControl

from .base import Allocation, Target



class MeritOrderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_watts: float = Field(default=100.0, ge=10, le=2000)
    hysteresis_usd_per_mwh: float = Field(default=2.0, ge=0)
    min_dwell_seconds: float = Field(default=300.0, ge=0)


@dataclass(frozen=True, slots=True)
class _Increment:
    miner: int
    index: int  # 0: off -> first level
    from_watts: float
    to_watts: float
    value_usd_per_mwh: float


class MeritOrderPolicy:
    name = "merit-order"

    def __init__(self, options: MeritOrderOptions | None = None) -> None:
        self.options = options or MeritOrderOptions()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MeritOrderPolicy:
        try:
            return cls(MeritOrderOptions.model_validate(dict(options)))
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"merit-order option {field}: {first['msg']}") from None

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        tree = LimitTree(snapshot.effective_limits(), snapshot.circuit_parents)
        prices = snapshot.prices
        hashprice = prices.hashprice_usd_per_ph_day or 0.0
        power_price = prices.power_usd_per_mwh if prices.power_usd_per_mwh is not None else 0.0
        # A stale price never triggers a switch (invariant 4): only running miners may run.
        prices_trusted = (
            prices.hashprice_usd_per_ph_day is not None
            and prices.power_usd_per_mwh is not None
            and not prices.hashprice_stale
            and not prices.power_stale
        )
        miners = snapshot.miners
        controllable = [m for m in miners if m.controllable]
        targets: dict[str, Target] = {}

        # Everything we cannot command counts at its worst case; idle draw of the rest too.
        loads = tree.loads(
            [(m.circuit, m.worst_case_watts) for m in miners if not m.controllable]
            + [(m.circuit, _idle_watts(m)) for m in controllable]
        )
        for m in miners:
            if not m.controllable:
                why = m.failure.value if m.failure else "no answer"
                targets[m.device_id] = Target(
                    m.device_id, m.worst_case_watts, f"{m.label}: {why}: counted at {m.worst_case_watts:.0f} W"
                )

        levels = [_levels(m, self.options.step_watts) for m in controllable]
        if not prices_trusted:
            # Hold: a running miner keeps at most what it holds now; only limits may shed it.
            levels = [_at_most(lv, m.reading.limit_watts if m.reading else None) for lv, m in zip(levels, controllable, strict=True)]
        granted = [0.0] * len(controllable)
        last_value: list[float | None] = [None] * len(controllable)
        blocked: dict[int, str] = {}

        def threshold(i: int) -> float:
            running = controllable[i].is_on
            h = self.options.hysteresis_usd_per_mwh
            return power_price - h if running else power_price + h

        def increment(i: int, index: int) -> _Increment | None:
            if index >= len(levels[i]):
                return None
            start = levels[i][index - 1] if index else _idle_watts(controllable[i])
            end = levels[i][index]
            curve = controllable[i].curve
            added_usd_per_hour = hashprice * (curve.ths_at(end) - (curve.ths_at(start) if index else 0.0)) / 1000 / 24
            value = added_usd_per_hour / max(end - start, 1e-9) * 1e6
            return _Increment(i, index, start, end, value)

        def take(inc: _Increment) -> bool:
            m = controllable[inc.miner]
            delta = inc.to_watts - inc.from_watts
            if tree.headroom(m.circuit, loads) < delta:
                blocked[inc.miner] = _tightest(tree, m.circuit, loads)
                return False
            tree.add(m.circuit, delta, loads)
            granted[inc.miner] = inc.to_watts
            last_value[inc.miner] = inc.value_usd_per_mwh
            return True

        heap: list[tuple[float, str, _Increment]] = []
        for i, m in enumerate(controllable):
            first = increment(i, 0)
            if first is None:
                continue
            dwelling = (
                m.state_since is not None
                and snapshot.clock - m.state_since < self.options.min_dwell_seconds
            )
            if dwelling and m.is_on:
                take(first)  # stays on through its dwell time, if the limits allow at all
                nxt = increment(i, 1)
                if granted[i] and nxt is not None:
                    heapq.heappush(heap, (-nxt.value_usd_per_mwh, m.device_id, nxt))
                continue
            if (dwelling and not m.is_on) or (not prices_trusted and not m.is_on):
                blocked[i] = "holding off (dwell time)" if dwelling else "holding off (prices stale)"
                continue
            heapq.heappush(heap, (-first.value_usd_per_mwh, m.device_id, first))

        while heap:
            _, _, inc = heapq.heappop(heap)
            if prices_trusted and inc.value_usd_per_mwh < threshold(inc.miner):
                continue  # this miner's further increments are worth even less
            if take(inc):
                nxt = increment(inc.miner, inc.index + 1)
                if nxt is not None:
                    heapq.heappush(heap, (-nxt.value_usd_per_mwh, controllable[inc.miner].device_id, nxt))

        ranked = sorted(range(len(controllable)), key=lambda i: -(last_value[i] or -1e18))
        for i in ranked:
            m = controllable[i]
            first = increment(i, 0)
            value = last_value[i] if granted[i] else (first.value_usd_per_mwh if first else None)
            reason = _reason(m, granted[i], value, power_price, blocked.get(i), prices_trusted, levels[i])
            targets[m.device_id] = Target(m.device_id, granted[i], reason, last_value[i])
        order = [targets[m.device_id] for m in miners if not m.controllable]
        order += [targets[controllable[i].device_id] for i in ranked]
        on = sum(1 for g in granted if g)
        summary = (
            f"{on}/{len(controllable)} controllable miners on, {sum(granted) / 1000:.1f} kW planned; "
            f"hashprice ${hashprice:.2f}/PH/day, power ${power_price:.2f}/MWh"
        )
        return Allocation(tuple(order), summary)


def _idle_watts(m: MinerState) -> float:
    if not m.is_on and m.measured_watts is not None:
        return m.measured_watts
    return IDLE_WATTS


def _levels(m: MinerState, step: float) -> list[float]:
    """The power settings this miner can hold, ascending, within what it may ever draw."""
    cap = m.capability
    top = min(cap.max_watts, m.max_watts)
    if cap.control is PowerControl.ON_OFF:
        return [top]
    if cap.control is PowerControl.PROFILES and cap.profiles_watts:
        return [p for p in cap.profiles_watts if cap.min_watts <= p <= top]
    levels = [cap.min_watts]
    while levels[-1] + step < top:
        levels.append(levels[-1] + step)
    if top > levels[-1]:
        levels.append(top)
    return levels


def _at_most(levels: list[float], limit: float | None) -> list[float]:
    if limit is None:
        return levels
    kept = [w for w in levels if w <= limit + 1.0]
    return kept or levels[:1]


def _tightest(tree: LimitTree, circuit: str, loads: Mapping[str, float]) -> str:
    node = min(tree.path(circuit), key=lambda c: tree.limits[c] - loads[c])
    return f"no room on {node} ({loads[node] / 1000:.1f} of {tree.limits[node] / 1000:.1f} kW)"


def _reason(
    m: MinerState,
    watts: float,
    value: float | None,
    price: float,
    blocked: str | None,
    prices_trusted: bool,
    levels: list[float],
) -> str:
    head = f"{m.label} -> {watts:.0f} W" if watts else f"{m.label} -> off"
    if watts and value is not None:
        top = " (max)" if levels and watts >= levels[-1] else ""
        limit = f"; {blocked}" if blocked else ""
        return f"{head}{top}: marginal ${value:.0f}/MWh > power ${price:.0f}/MWh{limit}"
    if blocked:
        return f"{head}: {blocked}"
    if not prices_trusted:
        return f"{head}: prices stale, holding"
    if value is None:
        return f"{head}: no power setting available"
    return f"{head}: ${value:.0f}/MWh at its best setting < power ${price:.0f}/MWh"
