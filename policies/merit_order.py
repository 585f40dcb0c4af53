"""Merit order over every load: each watt goes where it earns most, and only if it beats its price.

Miners and GPU nodes are ladders of power settings (:mod:`wattshift.policies.ladders`). A rung's
value is the revenue it adds, in $/MWh of the watts it adds: for a miner, hashprice times the
hashrate its efficiency curve gives; for a GPU node, its job's $/GPU-hour times the speed its
power cap allows. Because both are concave in power, the first rung of a load is its best, and
taking rungs best-first across the whole site is water-filling: marginal values end up equal,
the least valuable loads are the ones left off. A rung is taken only while its value beats the
power price and it fits every circuit on its path, after the worst case of every load we cannot
control has been counted.

The reverse order is the shedding order, and it comes out of the values: miners first (tens to
hundreds of $/MWh), then GPU power caps (their top rungs add little speed), then suspendable
jobs, then preemptible ones (their interruption cost is added to their first rung). Firm load
(a GPU rented on contract) is never touched.

No flapping (DESIGN.md invariant 7): a running load stays on until its value falls
``hysteresis_usd_per_mwh`` below the price, an idle one starts only when it beats the price by
as much (and a sleeping miner by its start cost, spread over ``miner_horizon_seconds``), and
neither changes state within ``min_dwell_seconds`` of the last change (a job: within its own
minimum run time; a miner: within its minimum up or down time; whichever is longer), unless a
limit forces it off. No limit ever forces a start, so a miner's minimum down time always holds.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain, compress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattshift.model.limits import LimitTree
from wattshift.model.snapshot import GpuNodeState, Load, SiteSnapshot

from .base import Allocation, Target
from .cohorts import CohortFill, Group, Grouper
from .ladders import Ladder, ladder_for


class MeritOrderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_watts: float = Field(default=100.0, ge=10, le=2000)
    hysteresis_usd_per_mwh: float = Field(default=2.0, ge=0)
    min_dwell_seconds: float = Field(default=300.0, ge=0)
    # How long a decision is expected to hold: switching costs are spread over it.
    switch_horizon_seconds: float = Field(default=3600.0, gt=0)
    # How long a miner's start is expected to run: its start cost (wear, boot) is spread over it.
    # Longer than a job's horizon: miners run for days between cuts. On the 30-day 4CP trace,
    # 1 h kept the less efficient miners off all month ($2,100 less margin); 4 h and 12 h agree.
    miner_horizon_seconds: float = Field(default=14_400.0, gt=0)


@dataclass(frozen=True, slots=True)
class _Rung:
    load: int
    index: int
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
        return _CohortWaterFill(snapshot, self.options).run()

    def decide_per_load(self, snapshot: SiteSnapshot) -> Allocation:
        """The same decision, one ladder and one heap entry per load: the reference the cohort
        path is tested and measured against."""
        return _WaterFill(snapshot, self.options).run()


class _WaterFill:
    """One decision: the state of the fill while rungs are taken best-first."""

    def __init__(self, snapshot: SiteSnapshot, options: MeritOrderOptions) -> None:
        self.snapshot = snapshot
        self.options = options
        prices = snapshot.prices
        self.hashprice = prices.hashprice_usd_per_ph_day or 0.0
        self.power_price = prices.power_usd_per_mwh if prices.power_usd_per_mwh is not None else 0.0
        self.power_trusted = prices.power_usd_per_mwh is not None and not prices.power_stale
        self.hashprice_trusted = prices.hashprice_usd_per_ph_day is not None and not prices.hashprice_stale
        self.tree = LimitTree(snapshot.effective_limits(), snapshot.circuit_parents)
        loads = snapshot.loads
        fixed = list(map(_fixed, loads))
        self.fixed: list[Load] = list(compress(loads, fixed))
        self.free: list[Load] = list(compress(loads, map(operator.not_, fixed)))
        self.ladders: list[Ladder] = self.make_ladders(self.free)
        # Everything we cannot command counts at its worst case; the off draw of the rest too.
        self.loads = self.tree.loads(chain(
            [(d.circuit, d.worst_case_watts) for d in self.fixed],
            zip(map(_circuit, self.free), map(_off_watts, self.ladders), strict=True),
        ))
        self.granted = [0.0] * len(self.ladders)
        self.last_value: list[float | None] = [None] * len(self.ladders)
        self.blocked: dict[int, str] = {}

    def make_ladders(self, free: list[Load]) -> list[Ladder]:
        return [self.ladder(d) for d in free]

    def ladder(self, load: Load) -> Ladder:
        return ladder_for(load, hashprice=self.hashprice, step_watts=self.options.step_watts,
                          horizon_seconds=self.options.switch_horizon_seconds, power_price=self.power_price,
                          miner_horizon_seconds=self.options.miner_horizon_seconds)

    def trusted(self, i: int) -> bool:
        """A stale price or rate never triggers a switch (invariant 4)."""
        load = self.ladders[i].load
        if isinstance(load, GpuNodeState):
            return self.power_trusted and load.job is not None and not load.job.value_stale
        return self.power_trusted and self.hashprice_trusted

    def rung(self, i: int, index: int) -> _Rung | None:
        ladder = self.ladders[i]
        levels = ladder.levels
        if index >= len(levels):
            return None
        if not self.trusted(i):
            # Hold: a running load keeps at most what it holds now; only limits may shed it.
            limit = ladder.load.limit_watts
            if index > 0 and limit is not None and levels[index] > limit + 1.0:
                return None
        start = levels[index - 1] if index else ladder.off_watts
        return _Rung(i, index, start, levels[index], ladder.value(index))

    def take(self, rung: _Rung) -> bool:
        load = self.ladders[rung.load].load
        delta = rung.to_watts - rung.from_watts
        if self.tree.headroom(load.circuit, self.loads) < delta:
            self.blocked[rung.load] = _tightest(self.tree, load.circuit, self.loads)
            return False
        self.tree.add(load.circuit, delta, self.loads)
        self.granted[rung.load] = rung.to_watts
        self.last_value[rung.load] = rung.value_usd_per_mwh
        return True

    def dwell_seconds(self, load: Load) -> float:
        dwell = self.options.min_dwell_seconds
        if isinstance(load, GpuNodeState):
            if load.job is not None and load.is_on:
                dwell = max(dwell, load.job.min_run_seconds)
            return dwell
        sw = load.switching
        return max(dwell, sw.min_up_seconds if load.is_on else sw.min_down_seconds)

    def threshold(self, i: int) -> float:
        h = self.options.hysteresis_usd_per_mwh
        return self.power_price - h if self.ladders[i].load.is_on else self.power_price + h

    def run(self) -> Allocation:
        heap: list[tuple[float, str, _Rung]] = []

        def push(rung: _Rung | None) -> None:
            if rung is not None:
                heapq.heappush(heap, (-rung.value_usd_per_mwh, self.ladders[rung.load].load.device_id, rung))

        for i, ladder in enumerate(self.ladders):
            load = ladder.load
            first = self.rung(i, 0)
            if first is None:
                continue
            dwelling = (
                load.state_since is not None and self.snapshot.clock - load.state_since < self.dwell_seconds(load)
            )
            if dwelling and load.is_on:
                if self.take(first):  # stays on through its dwell time, if the limits allow at all
                    push(self.rung(i, 1))
                continue
            if not load.is_on and (dwelling or not self.trusted(i)):
                self.blocked[i] = "holding off (dwell time)" if dwelling else "holding off (prices stale)"
                continue
            push(first)

        while heap:
            _, _, rung = heapq.heappop(heap)
            if self.trusted(rung.load) and rung.value_usd_per_mwh < self.threshold(rung.load):
                continue  # this load's further rungs are worth even less
            if self.take(rung):
                push(self.rung(rung.load, rung.index + 1))
        return self.allocation()

    def allocation(self) -> Allocation:
        targets = [_fixed_target(d) for d in self.fixed]
        ranked = sorted(range(len(self.ladders)), key=lambda i: -(self.last_value[i] or -1e18))
        for i in ranked:
            ladder = self.ladders[i]
            first = ladder.value(0) if ladder.levels else None
            value = self.last_value[i] if self.granted[i] else first
            reason = _reason(ladder, self.granted[i], value, self.power_price, self.blocked.get(i), self.trusted(i))
            targets.append(Target(ladder.load.device_id, self.granted[i], reason, self.last_value[i]))
        return Allocation(tuple(targets), self.summary())

    def summary(self) -> str:
        gpu = [isinstance(d, GpuNodeState) for d in self.free]
        miners_on = sum(1 for g, is_gpu in zip(self.granted, gpu, strict=True) if g and not is_gpu)
        miners = gpu.count(False)
        gpu_watts = sum(g for g, is_gpu in zip(self.granted, gpu, strict=True) if is_gpu)
        gpu_watts += sum(d.worst_case_watts for d in self.fixed if isinstance(d, GpuNodeState))
        return (
            f"{miners_on}/{miners} controllable miners on, {sum(self.granted) / 1000:.1f} kW planned"
            + (f" ({gpu_watts / 1000:.1f} kW AI)" if self.snapshot.gpu_nodes else "")
            + f"; hashprice ${self.hashprice:.2f}/PH/day, power ${self.power_price:.2f}/MWh"
        )


class _CohortWaterFill(_WaterFill):
    """:class:`_WaterFill`'s decision with identical loads taken together
    (:mod:`wattshift.policies.cohorts`). ``ladders[i]`` is the ladder of load ``i``'s group,
    shared by every member (its ``load`` is the group's first), so ``trusted``, ``threshold``
    and ``dwell_seconds`` answer for the whole group."""

    def make_ladders(self, free: list[Load]) -> list[Ladder]:
        grouper = Grouper()
        self.member_group = grouper.groups(free)
        self.first = grouper.first  # a member of each group
        self.groups = [self.ladder(free[i]) for i in self.first]
        return list(map(self.groups.__getitem__, self.member_group))

    def run(self) -> Allocation:
        groups = [Group(lad, self.trusted(i), self.threshold(i), self.dwell_seconds(lad.load))
                  for lad, i in zip(self.groups, self.first, strict=True)]
        self.result = CohortFill(self.tree, self.loads, groups, self.free, self.member_group, self.snapshot.clock,
                                 lambda circuit, loads: _tightest(self.tree, circuit, loads)).run()
        self.granted, self.last_value, self.blocked = self.result.granted, self.result.last_value, self.result.blocked
        return self.allocation()

    def allocation(self) -> Allocation:
        """As :meth:`_WaterFill.allocation`, the per-member work left to C (``map``): a reason
        is made once per outcome (group and rung, and the limit that stopped it, if one did),
        and only the label differs between members. What follows the label: _reason says
        nothing else of the load that its group does not share (tests/policies/test_cohorts.py
        compares every reason with the per-load path's)."""
        fill, free = self.result, self.free
        tails = [""] * len(fill.outcomes)
        for o in set(fill.outcome):
            tails[o] = self._tail(*fill.outcomes[o], None)
        tail_of = list(map(tails.__getitem__, fill.outcome))
        blocked_tails: dict[tuple[int, str], str] = {}
        for i, blocked in fill.blocked.items():
            key = (fill.outcome[i], blocked)
            if key not in blocked_tails:
                blocked_tails[key] = self._tail(*fill.outcomes[key[0]], blocked)
            tail_of[i] = blocked_tails[key]
        reasons = map(operator.add, map(_label, free), tail_of)
        made = list(map(Target, map(_device_id, free), self.granted, reasons, self.last_value))
        # Best first, as the per-load path's sort (stable: ties in the order of the loads).
        keys = [-(v or -1e18) for v in self.last_value]
        ranked = map(made.__getitem__, sorted(range(len(made)), key=keys.__getitem__))
        return Allocation((*map(_fixed_target, self.fixed), *ranked), self.summary())

    def _tail(self, g: int, watts: float, last: float | None, blocked: str | None) -> str:
        """The reason of a member of group ``g`` that ended so, less its label."""
        ladder = self.groups[g]
        value = last if watts else (ladder.value(0) if ladder.levels else None)
        reason = _reason(ladder, watts, value, self.power_price, blocked, self.trusted(self.first[g]))
        return reason.removeprefix(ladder.load.label)


_circuit = operator.attrgetter("circuit")
_off_watts = operator.attrgetter("off_watts")
_label = operator.attrgetter("label")
_device_id = operator.attrgetter("device_id")


def _fixed(load: Load) -> bool:
    """Loads the policy must leave as they are: unknown ones, and firm load already running."""
    if not load.controllable:
        return True
    return isinstance(load, GpuNodeState) and load.firm and load.is_on


def _fixed_target(load: Load) -> Target:
    watts = load.worst_case_watts
    if load.controllable:  # firm and running
        job = load.job.name if isinstance(load, GpuNodeState) and load.job else "job"
        return Target(load.device_id, watts, f"{load.label}: firm ({job} on contract): never curtailed")
    why = load.failure.value if load.failure else "no answer"
    return Target(load.device_id, watts, f"{load.label}: {why}: counted at {watts:.0f} W")


def _tightest(tree: LimitTree, circuit: str, loads: Mapping[str, float]) -> str:
    node = min(tree.path(circuit), key=lambda c: tree.limits[c] - loads[c])
    return f"no room on {node} ({loads[node] / 1000:.1f} of {tree.limits[node] / 1000:.1f} kW)"


def _reason(
    ladder: Ladder, watts: float, value: float | None, price: float, blocked: str | None, trusted: bool
) -> str:
    load = ladder.load
    head = f"{load.label} -> {watts:.0f} W" if watts else f"{load.label} -> off"
    if watts and isinstance(load, GpuNodeState):
        head += f" (cap {load.cap_for(watts):.0f} W/GPU)"
    if watts and value is not None:
        top = " (max)" if ladder.levels and watts >= ladder.levels[-1] else ""
        limit = f"; {blocked}" if blocked else ""
        if ladder.firm:
            return f"{head}{top}: firm, started first{limit}"
        return f"{head}{top}: marginal ${value:.0f}/MWh > power ${price:.0f}/MWh{limit}"
    if blocked:
        return f"{head}: {blocked}"
    if not trusted:
        return f"{head}: prices stale, holding"
    if value is None:
        if isinstance(load, GpuNodeState):
            return f"{head}: no job waiting" if load.job is None else f"{head}: job has no known value"
        return f"{head}: no power setting available"
    return f"{head}: ${value:.0f}/MWh at its best setting < power ${price:.0f}/MWh"
