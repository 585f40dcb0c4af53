"""Look ahead: plan the next hours with the site program, act on the plan's first step.

merit-order decides from the prices of this instant, with switching costs spread over a fixed
horizon: through a three-hour price plateau it keeps a training run going that a site with a
forecast would suspend, and it cannot tell a 15-minute spike (ride it out) from an afternoon of
scarcity (stop). ``lookahead`` plans instead. At each re-plan it builds the site program
(:mod:`wattshift.planning.site_program`: the same linear program, the same switching physics, the
back-test's hindsight optimum solves over the whole trace) over ``horizon_hours`` from the site as
it stands (who is awake, booting, held asleep by a minimum down time, running), with the budget of
every announced event and the power price where it is published (``snapshot.forecast``: the
day-ahead price; the price now holds where none is), and solves it with HiGHS. Between re-plans
the decisions follow the plan's step for their time; the plan is redone every
``replan_every_seconds``, and at once when the site left it: a group changed, fewer awake than
planned (a start refused, a miner lost), the price moved away from the plan's. A budget below
what the plan assumed (a cut no event announced) is met at once by merit-order's shedding order,
with no solver on the way (a fast shed must not wait on a plan), and the next decision plans
from the site the cut left.

**A late solver never holds the site.** HiGHS gets ``time_budget_seconds`` per plan; a plan that
is late or fails, a stale price or a stale job value (which must never switch anything,
invariant 4), and the decision is merit-order's (with ``fallback`` as its options), and says so.

From the plan to targets: per group the plan's count on (rounded), members already on first
(the longest on last to go, so minimum up times are kept where the count allows), then the
members free to start; each at the group's planned power, granted best value first through the
same circuit bookkeeping as the simple policies, so every target fits every circuit of the
snapshot whatever the rounding did. What the site counts whatever a policy says (unknown loads
at their worst case, firm work running) stays as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wattshift.model.snapshot import GpuNodeState, Load, MinerState, SiteSnapshot
from wattshift.planning.site_program import PlanError, build, solve

from .base import Allocation, Target, parse_options
from .fill import Fill, fixed
from .ladders import revenue_usd_per_hour
from .lookahead_plan import Groups, Plan, group_loads, plan_from, settings_of, site_program
from .merit_order import MeritOrderOptions, MeritOrderPolicy

BUDGET_FELL = "the budget fell below the plan's"
BUDGET_SLACK = 0.02  # of the plan's budget: a fall within it follows the plan


class LookaheadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_hours: float = Field(default=12.0, ge=0.5, le=72.0)
    step_seconds: float = Field(default=300.0, ge=60.0, le=3600.0)  # the plan's step, near
    near_hours: float = Field(default=2.0, ge=0.0, le=72.0)  # fine steps this far ahead
    far_step_seconds: float = Field(default=900.0, ge=60.0, le=3600.0)  # and this coarse after
    # How long the price now outweighs a published day-ahead price (its weight: exp(-t / this)).
    persistence_seconds: float = Field(default=3600.0, ge=0.0, le=86_400.0)
    replan_every_seconds: float = Field(default=900.0, ge=0.0, le=86_400.0)  # 0: every decision
    # The price moved this far from what the plan assumed for now (and 10 % of it): re-plan.
    replan_price_usd_per_mwh: float = Field(default=10.0, ge=0.0)
    time_budget_seconds: float = Field(default=2.0, gt=0.0, le=60.0)  # HiGHS's time limit per plan
    fallback: MeritOrderOptions = Field(default_factory=MeritOrderOptions)


class LookaheadPolicy:
    name = "lookahead"
    stateful = True

    def __init__(self, options: LookaheadOptions | None = None) -> None:
        self.options = options or LookaheadOptions()
        self.fallback = MeritOrderPolicy(self.options.fallback)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> LookaheadPolicy:
        return cls(parse_options(LookaheadOptions, options, "lookahead"))

    @property
    def forecast_seconds(self) -> float:
        """How far ahead the snapshot's forecast must reach (the loop and the back-test read it)."""
        return self.options.horizon_hours * 3600

    def decide(self, snapshot: SiteSnapshot, state: Mapping[str, Any] | None = None) -> Allocation:
        stale = _stale(snapshot)
        if stale:
            return self._fall_back(snapshot, stale, {})
        groups = group_loads(snapshot)
        plan = Plan.from_state((state or {}).get("plan"))
        late_until = float((state or {}).get("late_until", float("-inf")))
        why = self._replan_reason(plan, groups, snapshot)
        if why == BUDGET_FELL:
            # An unannounced cut is met at once, by merit-order's shedding order; the next
            # decision plans again from the site the cut left (a fast shed does not wait on a plan).
            return self._fall_back(snapshot, f"{why} (an unannounced cut); the next decision plans again", {})
        if why is not None:
            if snapshot.clock < late_until:
                return self._fall_back(snapshot, "the solver was late at the last plan", dict(state or {}))
            try:
                plan = self._plan(snapshot, groups)
            except PlanError as err:
                late = {"late_until": snapshot.clock + max(self.options.replan_every_seconds, 1.0)}
                return self._fall_back(snapshot, f"no plan ({err})", late)
        assert plan is not None
        step = plan.step_at(snapshot.clock)
        assert step is not None  # a fresh plan starts at this decision's clock
        return _Follow(snapshot, groups, plan, step, self.options).allocation()

    def _replan_reason(self, plan: Plan | None, groups: Groups, snapshot: SiteSnapshot) -> str | None:
        if plan is None:
            return "no plan"
        if snapshot.clock - plan.clock >= self.options.replan_every_seconds:
            return "due"
        step = plan.step_at(snapshot.clock)
        if step is None:
            return "plan ran out"
        if plan.signature != groups.signature:
            return "the groups changed"
        # Both count an event from the loop's lead. A small fall (the overhead a meter sees moves
        # every tick) is no cut: the targets fit the snapshot's limits whatever the plan says.
        if snapshot.budget_watts < plan.budgets[step] - max(1.0, BUDGET_SLACK * plan.budgets[step]):
            return BUDGET_FELL
        price = snapshot.prices.power_usd_per_mwh or 0.0
        if abs(price - plan.prices[step]) > max(self.options.replan_price_usd_per_mwh, 0.1 * abs(plan.prices[step])):
            return "the price left the plan's"
        for g, members in enumerate(groups.miners):
            planned = plan.miners[g][step - 1][0] if step else plan.miners[g][0][0]
            if sum(m.is_on for m in members) < round(planned) - 0.5:
                return "fewer awake than planned"
        return None

    def _plan(self, snapshot: SiteSnapshot, groups: Groups) -> Plan:
        o = self.options
        program, budget = site_program(
            snapshot, groups, horizon_seconds=o.horizon_hours * 3600, step_seconds=o.step_seconds,
            near_seconds=o.near_hours * 3600, far_step_seconds=o.far_step_seconds,
            persistence_seconds=o.persistence_seconds)
        solution = solve(build(program), time_limit_s=o.time_budget_seconds)
        keep = int(np.searchsorted(program.start, o.replan_every_seconds, side="right")) + 1
        return plan_from(solution, program, budget, groups, snapshot.clock, keep)

    def _fall_back(self, snapshot: SiteSnapshot, why: str, state: Mapping[str, Any]) -> Allocation:
        chosen = self.fallback.decide(snapshot)
        return Allocation(chosen.targets, f"lookahead: {why}; merit-order decides. {chosen.summary}",
                          {k: v for k, v in state.items() if k == "late_until"})


def _stale(snapshot: SiteSnapshot) -> str | None:
    prices = snapshot.prices
    if prices.power_usd_per_mwh is None or prices.power_stale:
        return "the power price is stale"
    if prices.hashprice_usd_per_ph_day is None or prices.hashprice_stale:
        return "hashprice is stale"
    for node in snapshot.gpu_nodes:
        if node.job is not None and node.job.value_stale and not fixed(node):
            return f"the job value on {node.device_id} is stale"
    return None


class _Follow:
    """One decision from the plan's step: counts per group to members, members to targets."""

    def __init__(self, snapshot: SiteSnapshot, groups: Groups, plan: Plan, step: int, options: LookaheadOptions):
        self.snapshot, self.groups, self.plan, self.step, self.options = snapshot, groups, plan, step, options
        self.fill = Fill(snapshot)
        self.hashprice = snapshot.prices.hashprice_usd_per_ph_day or 0.0

    def allocation(self) -> Allocation:
        wanted: list[tuple[float, Load, float, str]] = []  # (value $/MWh, load, watts, why)
        off: list[tuple[Load, str]] = []
        for g, members in enumerate(self.groups.miners):
            awake, booting, watts = self.plan.miners[g][self.step]
            hashing = max(awake - booting, 1e-9)
            self._members(members, awake, watts / hashing, wanted, off, f"{round(awake)} of {len(members)}")
        for g, nodes in enumerate(self.groups.gpus):
            running, watts = self.plan.gpus[g][self.step]
            self._members(nodes, running, watts / max(running, 1e-9), wanted, off,
                          f"{round(running)} of {len(nodes)} running")
        off += [(n, "no job with a known value") for n in self.groups.idle]
        targets = [t for t in self.fill.targets.values()]  # what the site counts whatever we say
        wanted.sort(key=lambda w: (-w[0], w[1].device_id))
        for value, load, watts, why in wanted:
            low, high, settings = settings_of(load)
            granted = self.fill.grant(load, low, max(low, min(high, watts)), settings)
            if granted:
                targets.append(Target(load.device_id, granted, f"{load.label} -> {granted:.0f} W: {why}", value))
            else:
                room = self.fill.tightest(load)
                targets.append(Target(load.device_id, 0.0, f"{load.label} -> off: {why}, but {room}"))
        targets += [Target(load.device_id, 0.0, f"{load.label} -> off: {why}") for load, why in off]
        on = sum(1 for t in targets if t.watts > 0)
        age = self.snapshot.clock - self.plan.clock
        summary = (f"lookahead: plan of {self.options.horizon_hours:g} h made {age:.0f} s ago "
                   f"(margin ${self.plan.margin_usd:.2f} over it), step {self.step}; {on} loads on, "
                   f"{sum(t.watts for t in targets) / 1000:.1f} kW planned")
        return Allocation(tuple(targets), summary, {"plan": self.plan.to_state()})

    def _members(self, members: list[Any], count: float, watts: float, wanted: list[tuple[float, Load, float, str]],
                 off: list[tuple[Load, str]], share: str) -> None:
        """The plan's ``count`` of ``members`` on at ``watts`` each: those on now first (the
        longest on goes first, so minimum up times hold where the count allows), then those free
        to start (the sequencer holds a start inside a minimum down time anyway)."""
        clock = self.snapshot.clock
        keep = round(count)

        def order(load: Any) -> tuple[int, float, str]:
            since = load.state_since if load.state_since is not None else float("-inf")
            return (0, -since, load.device_id) if load.is_on else (1, 0.0, load.device_id)

        for rank, load in enumerate(sorted(members, key=order)):
            if rank < keep:
                why = f"lookahead plan: {share} on"
                wanted.append((_value(load, watts, self.hashprice), load, watts, why))
            else:
                up = isinstance(load, MinerState) and load.is_on and load.state_since is not None and (
                    clock - load.state_since < load.switching.min_up_seconds)
                early = " (a stop inside its minimum up time)" if up else ""
                off.append((load, f"lookahead plan: {share} on{early}"))


def _value(load: Load, watts: float, hashprice: float) -> float:
    """$/MWh the load earns at ``watts``: the order of grants (and what the journal shows)."""
    if watts <= 0:
        return 0.0
    if isinstance(load, GpuNodeState) and load.firm:
        return 1e9
    return revenue_usd_per_hour(load, watts, hashprice) / watts * 1e6
