"""Every load as a ladder of power settings with the revenue each one earns.

The merit order (and anything else that ranks watts by value) sees miners and GPU nodes the
same way: a ladder of settings it may hold while running, the draw when off, and the revenue at
each setting. What differs is only how the ladder and the revenue are made:

- a miner climbs from its minimum to its maximum in steps (or its profiles, or on/off), and earns
  hashprice times the hashrate its efficiency curve gives at that power;
- a GPU node climbs its per-card power cap from the cards' minimum to their maximum, and earns
  its job's $/GPU-hour times the share of full speed the cap allows. Throughput falls much slower
  than power when a GPU is capped (memory-bound work), so the share is ``(cap / max) ** (1/3)``.

Switching costs are folded into the first rung: keeping a running job avoids its interruption
cost, starting a stopped one loses its restart time; starting a sleeping miner costs its wear,
its boot energy and the revenue its boot time does not earn (``MinerSwitching.start_usd``),
while stopping one costs nothing (the next start pays). All are spread over
``horizon_seconds``, the time a decision is expected to last (a miner's its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.model.miner import PowerControl
from wattshift.model.snapshot import GpuNodeState, Load, MinerState

# Throughput share of a GPU at a power cap: (cap / max_cap) ** (1 / GPU_CAP_EXPONENT).
GPU_CAP_EXPONENT = 3.0
GPU_CAP_STEP_WATTS = 50.0  # per card: finer steps are within NVML's own regulation noise
# Firm load (rented on contract) ranks above anything a watt could earn elsewhere.
FIRM_VALUE_USD_PER_MWH = 1e9


@dataclass(frozen=True, slots=True)
class Ladder:
    load: Load
    levels: tuple[float, ...]  # watts while running, ascending; empty: it cannot run
    off_watts: float
    usd_per_hour: tuple[float, ...]  # revenue at each level
    first_rung_bonus_usd_per_mwh: float = 0.0  # switching cost, spread over the horizon
    firm: bool = False

    def value(self, index: int) -> float:
        """$/MWh earned by the watts that rung ``index`` adds over the one below (or off)."""
        start = self.levels[index - 1] if index else self.off_watts
        earned = self.usd_per_hour[index] - (self.usd_per_hour[index - 1] if index else 0.0)
        if self.firm:
            return FIRM_VALUE_USD_PER_MWH
        value = earned / max(self.levels[index] - start, 1e-9) * 1e6
        return value + (self.first_rung_bonus_usd_per_mwh if index == 0 else 0.0)


def gpu_speed_share(cap_watts: float, cap_max_watts: float) -> float:
    """Share of full speed a GPU keeps at a power cap."""
    return float(max(0.0, min(1.0, cap_watts / cap_max_watts)) ** (1 / GPU_CAP_EXPONENT))


def revenue_usd_per_hour(load: Load, watts: float, hashprice_usd_per_ph_day: float) -> float:
    """What ``load`` earns held at ``watts`` (0 W: nothing). The one rule every valuation uses:
    the merit order, shadow mode, the live metrics and the back-test."""
    if watts <= 0:
        return 0.0
    if isinstance(load, GpuNodeState):
        job = load.job
        if job is None or job.state.finished or job.value_usd_per_hour is None:
            return 0.0
        cap = max(load.cap_for(watts), load.cap_min_watts)
        return job.value_usd_per_hour * gpu_speed_share(cap, load.cap_max_watts)
    return hashprice_usd_per_ph_day * load.curve.ths_at(watts) / 1000 / 24


def ladder_for(
    load: Load, *, hashprice: float, step_watts: float, horizon_seconds: float, power_price: float = 0.0,
    miner_horizon_seconds: float | None = None,
) -> Ladder:
    if isinstance(load, GpuNodeState):
        return gpu_ladder(load, horizon_seconds=horizon_seconds)
    return miner_ladder(load, hashprice=hashprice, step_watts=step_watts, power_price=power_price,
                        horizon_seconds=miner_horizon_seconds or horizon_seconds)


def miner_ladder(
    m: MinerState, *, hashprice: float, step_watts: float, horizon_seconds: float = 3600.0, power_price: float = 0.0
) -> Ladder:
    levels = tuple(miner_levels(m, step_watts))
    revenue = tuple(revenue_usd_per_hour(m, w, hashprice) for w in levels)
    bonus = 0.0
    if levels and not m.is_on:  # a start must earn back what it costs within the horizon
        start = m.switching.start_usd(power_price, revenue[0])
        mwh_over_horizon = (levels[0] - m.idle_watts) / 1e6 * horizon_seconds / 3600
        bonus = -start / max(mwh_over_horizon, 1e-9)
    return Ladder(m, levels, m.idle_watts, revenue, bonus)


def miner_levels(m: MinerState, step: float) -> list[float]:
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


def gpu_ladder(node: GpuNodeState, *, horizon_seconds: float) -> Ladder:
    job = node.job
    off = node.idle_watts
    if job is None or job.state.finished:
        return Ladder(node, (), off, ())
    if node.firm:  # a contract buys the cards as they are: full caps, always, whatever they earn
        return Ladder(node, (node.max_watts,), off, (job.value_usd_per_hour or 0.0,), firm=True)
    if job.value_usd_per_hour is None:
        return Ladder(node, (), off, ())
    caps = [node.cap_min_watts]
    while caps[-1] + GPU_CAP_STEP_WATTS < node.cap_max_watts:
        caps.append(caps[-1] + GPU_CAP_STEP_WATTS)
    if node.cap_max_watts > caps[-1]:
        caps.append(node.cap_max_watts)
    levels = tuple(node.watts_at_cap(c) for c in caps)
    rate = job.value_usd_per_hour
    revenue = tuple(rate * gpu_speed_share(c, node.cap_max_watts) for c in caps)
    mwh_over_horizon = (levels[0] - off) / 1e6 * horizon_seconds / 3600
    if node.is_on:
        bonus = job.interruption_usd / max(mwh_over_horizon, 1e-9)
    else:
        bonus = -rate * job.switching.restart_seconds / 3600 / max(mwh_over_horizon, 1e-9)
    return Ladder(node, levels, off, revenue, bonus)
