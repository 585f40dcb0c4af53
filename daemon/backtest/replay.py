"""Replay a trace through a policy and the sequencer on an in-process site model.

The same code as the live loop decides: at each step the site is read into a
:class:`SiteSnapshot`, ``policy.decide`` says where power should go, ``plan_transition`` says what
may be sent now, and the model carries it out. Like the controller, a step whose plan deferred
grants (sheds not yet confirmed) is read and planned again one tick later, up to a few times.

Events in the trace are known one step ahead: the loop plans for the lower of this step's budget
and the next's, the way a 4CP window is scheduled and a demand-response call comes with notice,
so the site is already under a cut when it begins. Limit violations are judged on the *true*
draw against the budget in force at that step, never on what the loop believed.

A policy that plans ahead (``forecast_seconds``) also gets ``snapshot.forecast``: the trace's
budget events announced ``notice_seconds`` ahead (beyond that, the site's own budget), and its
day-ahead power price where the trace has one. The real-time price is never in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from wattshift.daemon.control.sequencer import plan_transition
from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.forecast import ForecastStep
from wattshift.model.snapshot import Prices
from wattshift.policies.base import Policy, forecast_seconds

from .site import BacktestSite
from .site_model import SiteModel, Totals
from .trace import Trace

MAX_ROUNDS = 4  # reads and plans per step: sheds confirmed, then the grants they made room for
# How long before it starts a budget event is known: a 4CP window called by the site's own peak
# forecast the same day, a demand-response call with hours of notice (ERCOT ERS: 10-30 minutes).
DEFAULT_NOTICE_SECONDS = 7200.0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step, for the plot: prices, the budget and the mean draw of each class."""

    at: Any  # datetime
    hashprice_usd_per_ph_day: float
    power_usd_per_mwh: float
    gpu_rate_usd_per_gpu_hour: float | None
    budget_watts: float
    miner_watts: float
    gpu_watts: float


@dataclass
class BacktestResult:
    site: str
    policy: str
    trace: str
    steps: int
    step_seconds: float
    totals: Totals
    wall_seconds: float
    decide_calls: int
    records: list[StepRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # "time: circuit: ..." at every step over
    over_limit_revenue_usd: float = 0.0  # earned in steps over a limit: not money a policy may count

    @property
    def margin_within_limits_usd(self) -> float:
        """The margin without the revenue of steps over a limit (what is compared with the optimum)."""
        return self.totals.margin_usd - self.over_limit_revenue_usd

    def summary(self) -> dict[str, Any]:
        t = self.totals
        return {
            "site": self.site,
            "policy": self.policy,
            "trace": self.trace,
            "steps": self.steps,
            "step_seconds": self.step_seconds,
            "hours": round(t.seconds / 3600, 3),
            "energy_mwh": round(t.energy_wh / 1e6, 4),
            "miner_energy_mwh": round(t.miner_wh / 1e6, 4),
            "gpu_energy_mwh": round(t.gpu_wh / 1e6, 4),
            "mining_revenue_usd": round(t.mining_usd, 2),
            "ai_revenue_usd": round(t.ai_usd, 2),
            "revenue_usd": round(t.revenue_usd, 2),
            "power_cost_usd": round(t.power_usd, 2),
            "switching_cost_usd": round(t.switching_usd, 2),
            "wear_cost_usd": round(t.wear_usd, 2),
            "margin_usd": round(t.margin_usd, 2),
            "miner_switches": t.miner_switches,
            "miner_starts": t.miner_starts,
            "refused_starts": t.refused_starts,
            "min_up_breaks": t.min_up_breaks,
            "gpu_starts": t.gpu_starts,
            "job_interruptions": t.job_interruptions,
            "limit_violations": len(self.violations),
            "revenue_over_limit_usd": round(self.over_limit_revenue_usd, 2),
            "margin_within_limits_usd": round(self.margin_within_limits_usd, 2),
            "wall_seconds": round(self.wall_seconds, 3),
            "steps_per_second": round(self.steps / self.wall_seconds, 1) if self.wall_seconds else None,
        }


def true_limits(site: BacktestSite, budget_watts: float | None) -> dict[str, float]:
    """The circuit limits in force: the site's own, lowered by a trace event (never raised)."""
    return _lowered(site.circuit_limits(), budget_watts)


def _lowered(own: dict[str, float], budget_watts: float | None) -> dict[str, float]:
    limits = dict(own)
    if budget_watts is not None:
        limits[SITE_CIRCUIT] = min(limits[SITE_CIRCUIT], budget_watts)
    return limits


def forecast_at(
    site: BacktestSite, trace: Trace, index: int, elapsed: float, *, seconds: float, notice_seconds: float,
) -> tuple[ForecastStep, ...]:
    """What a site knows at ``elapsed`` seconds into row ``index`` of the next ``seconds``: the
    budget with every event announced by then, the day-ahead price where the trace has one.

    A step's budget is the one the loop will plan against there: the lower of that row's and the
    next one's (an event is met from the step before it begins, see the module's docstring)."""
    rows = trace.rows
    now = rows[index].at + timedelta(seconds=elapsed)
    own = site.circuit_limits()

    def known(j: int) -> float:
        announced = rows[j].budget_watts if (rows[j].at - now).total_seconds() <= notice_seconds else None
        return _lowered(own, announced)[SITE_CIRCUIT]

    steps = []
    for j in range(index, len(rows)):
        offset = (rows[j].at - now).total_seconds()
        if offset >= seconds:
            break
        budget = min(known(j), known(j + 1) if j + 1 < len(rows) else known(j)) - site.reserve_watts
        price = rows[j].day_ahead_usd_per_mwh if j > index else None
        steps.append(ForecastStep(max(0.0, offset), trace.durations[j] - (elapsed if j == index else 0.0),
                                  max(0.0, budget), price))
    return tuple(steps)


def run_backtest(
    site: BacktestSite, policy: Policy, trace: Trace, *, keep_records: bool = True, grouped: bool = True,
    notice_seconds: float = DEFAULT_NOTICE_SECONDS,
) -> BacktestResult:
    """``grouped``: identical miners in identical states are modelled once (the same result,
    faster: see :class:`SiteModel`). ``notice_seconds``: how long before it starts a budget event
    is in a planning policy's forecast."""
    model = SiteModel(site, grouped=grouped)
    totals = Totals()
    records: list[StepRecord] = []
    violations: list[str] = []
    rows = trace.rows
    start = rows[0].at
    tick = site.tick_seconds
    decides = 0
    over_limit_usd = 0.0
    began = time.perf_counter()
    own = site.circuit_limits()
    gpu_models = {g.gpu_model for g in site.gpu_nodes}
    ahead = forecast_seconds(policy)
    for index, row in enumerate(rows):
        seconds = trace.durations[index]
        limits = _lowered(own, row.budget_watts)
        upcoming = _lowered(own, rows[index + 1].budget_watts) if index + 1 < len(rows) else limits
        planned_budget = min(limits[SITE_CIRCUIT], upcoming[SITE_CIRCUIT]) - site.reserve_watts
        rate = row.gpu_rate_usd_per_gpu_hour
        prices = Prices(row.hashprice_usd_per_ph_day, row.power_usd_per_mwh,
                        gpu_rates_usd_per_gpu_hour={m: rate for m in gpu_models} if rate is not None else {})
        model.set_gpu_work(row.gpu_demand, rate)
        clock0 = (row.at - start).total_seconds()
        step = Totals()

        def advance(span: float, *, _limits: dict[str, float] = limits, _row: Any = row, _step: Totals = step) -> None:
            _step.add(model.advance(span, hashprice=_row.hashprice_usd_per_ph_day,
                                    power_price=_row.power_usd_per_mwh, limits=_limits))

        elapsed = 0.0
        for _ in range(MAX_ROUNDS):
            snapshot = model.snapshot(at=row.at + timedelta(seconds=elapsed), clock=clock0 + elapsed,
                                      budget_watts=max(0.0, planned_budget), prices=prices)
            if ahead:
                snapshot = replace(snapshot, forecast=forecast_at(site, trace, index, elapsed, seconds=ahead,
                                                                  notice_seconds=notice_seconds))
            allocation = policy.decide(snapshot)
            decides += 1
            plan = plan_transition(snapshot, allocation)
            model.apply(plan.now, clock0 + elapsed)
            span = min(tick, seconds - elapsed)
            if not plan.deferred or span <= 0:
                break
            advance(span)
            elapsed += span
        advance(seconds - elapsed)
        violations.extend(f"{row.at.isoformat()}: {v}" for v in step.violations)
        if step.violations:
            over_limit_usd += step.revenue_usd
        step.violations.clear()
        totals.add(step)
        if keep_records:
            records.append(StepRecord(
                row.at, row.hashprice_usd_per_ph_day, row.power_usd_per_mwh, rate,
                limits[SITE_CIRCUIT], step.miner_wh * 3600 / seconds, step.gpu_wh * 3600 / seconds,
            ))
    return BacktestResult(site.name, policy.name, trace.name, len(rows), trace.step_seconds, totals,
                          time.perf_counter() - began, decides, records, violations, over_limit_usd)
