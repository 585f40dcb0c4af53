"""The hindsight optimum of a trace: the site program over every step at once, solved by HiGHS.

With perfect foresight of prices, budgets and GPU work, what is the most margin the site could
have made under the same limits? The back-test divides a policy's margin by this, so it must be
an **upper bound** on what any policy the site model admits can make. The program itself (groups
of identical devices, every quantity a time average over a step, tangents of the concave curves,
the switching rows) is :mod:`wattshift.planning.site_program`, shared with the ``lookahead``
policy; here it is given the back-test site and the trace, every miner asleep at the start, the
site model's switching physics (``SITE_MODEL_SWITCHING``), and solved whole or in windows. The
proof that it is a bound, rule by rule, is in docs/backtest.md ("Why it is a bound").

Where even the idle draw of everything is over a limit, no policy can meet it: those steps are
reported as a shortfall, have no limit rows and earn nothing (a policy's money while over a
limit does not count either, see the back-test report).

By default on-counts are continuous (an LP, the proven bound). ``integer=True`` makes them integer
(a MIP): tighter, slower, solved to ``MIP_REL_GAP``; its dual bound is reported beside the incumbent
and the ratio is taken against the bound.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.specs import MinerSpec
from wattshift.planning.program import MIP_REL_GAP, StepClock
from wattshift.planning.site_program import GpuBlock, MinerBlock, PlanError, SiteProgram, build, solve
from wattshift.policies.ladders import GPU_CAP_EXPONENT

from .replay import true_limits
from .site import BacktestSite, MinerCount, spec_for
from .site_model import RAMP_WATTS_PER_S
from .trace import Trace

# Whether the site model charges boot time, wear and minimum down time (issue 15): it does
# (daemon/backtest/site_model.py). The optimum must charge exactly what the site model charges,
# no more, or it stops being a bound; False is the free-switching model, for comparison.
SITE_MODEL_SWITCHING = True


class OptimumError(RuntimeError):
    """No solution: the message says why (solver status)."""


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Steps where a limit is below the idle draw of everything under it: no policy meets them."""

    steps: int
    first_at: str
    circuit: str
    worst_kw: float
    at: frozenset[str]  # the steps' timestamps (ISO 8601), as the replay names its violations

    def describe(self) -> str:
        return (f"the limit cannot be met at {self.steps} step(s) (first {self.first_at}): "
                f"{self.worst_kw:.2f} kW of idle load over {self.circuit}'s limit; nothing is earned there")


@dataclass(frozen=True, slots=True)
class Optimum:
    margin_usd: float  # of the solution found (for a MIP: the incumbent)
    bound_usd: float  # an upper bound on the optimum: the margin itself for the LP, the dual bound for a MIP
    mining_usd: float
    ai_usd: float
    power_usd: float
    switching_usd: float
    energy_mwh: float
    integer: bool
    switching: bool
    status: str
    mip_gap: float | None
    columns: int
    rows: int
    build_seconds: float
    solve_seconds: float
    shortfall: Shortfall | None
    miner_watts: tuple[float, ...]  # mean draw per step, for the plot
    gpu_watts: tuple[float, ...]
    windows: int = 1  # solved as one program, or as the sum of this many windows (still a bound)

    def summary(self) -> dict[str, object]:
        return {
            "margin_usd": round(self.margin_usd, 2),
            "bound_usd": round(self.bound_usd, 2),
            "mining_revenue_usd": round(self.mining_usd, 2),
            "ai_revenue_usd": round(self.ai_usd, 2),
            "power_cost_usd": round(self.power_usd, 2),
            "switching_cost_usd": round(self.switching_usd, 2),
            "energy_mwh": round(self.energy_mwh, 4),
            "kind": "MIP (integer on-counts)" if self.integer else "LP relaxation (upper bound)",
            "switching_physics": self.switching,
            "status": self.status,
            "mip_rel_gap_target": MIP_REL_GAP if self.integer else None,
            "mip_gap": self.mip_gap,
            "shortfall": self.shortfall.describe() if self.shortfall else None,
            "windows": self.windows,
            "columns": self.columns,
            "rows": self.rows,
            "build_seconds": round(self.build_seconds, 3),
            "solve_seconds": round(self.solve_seconds, 3),
        }


def miner_spec(group: MinerCount) -> MinerSpec:
    """The spec of a miner group: boot, wear and minimum down time as the site model sees them
    (the model's row with the group's ``switching`` overrides in place)."""
    return group.kind.spec


def solve_optimum(
    site: BacktestSite, trace: Trace, *, integer: bool = False, switching: bool | None = None,
    time_limit_s: float = 600.0, window_hours: float | None = None, overlap_hours: float = 3.0,
    workers: int = 1,
) -> Optimum:
    """The hindsight optimum; ``switching`` (default: as the site model) charges boot, wear and min down.

    ``window_hours``: solve the trace in windows of that many hours instead of all at once, each
    with ``overlap_hours`` of the trace after it (its limits, no money) and, before it, the steps
    its rows look back on as free columns. The sum of the windows' optima is still an upper bound
    (docs/backtest.md, "Windows"); ``workers`` solve windows in parallel processes.
    """
    physics = SITE_MODEL_SWITCHING if switching is None else switching
    T = len(trace.rows)
    if window_hours is None or window_hours * 3600 >= trace.seconds:
        return _solve(site, trace, integer, physics, time_limit_s, 0, T, 0, T)
    step = trace.step_seconds
    core = max(1, round(window_hours * 3600 / step))
    ahead = int(np.ceil(overlap_hours * 3600 / step))
    back = _lookback(site, trace) if physics else 3
    jobs = []
    for c0 in range(0, T, core):
        c1 = min(T, c0 + core)
        lo, hi = max(0, c0 - back), min(T, c1 + ahead + back)
        window = replace(trace, rows=trace.rows[lo:hi], durations=trace.durations[lo:hi])
        # Rows bind from the core on (from the first step for the first window: its start is the
        # site's true start, everything asleep) to the end of the overlap; money on the core only.
        jobs.append((site, window, integer, physics, time_limit_s, c0 - lo if lo else 0,
                     min(hi, c1 + ahead) - lo, c0 - lo, c1 - lo))
    if workers > 1:
        # Spawned, not forked: a fork of a process whose HiGHS threads already run can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_solve_job, jobs))
    else:
        parts = [_solve_job(job) for job in jobs]
    return _combine(parts, limits_of=(site, trace))


def _solve_job(job: tuple[Any, ...]) -> Optimum:
    return _solve(*job)


def _lookback(site: BacktestSite, trace: Trace) -> int:
    """Steps a row may look back (or ahead) on: min down, boot and ramp windows, and one."""
    longest = max([miner_spec(g).min_down_seconds for g in site.miners]
                  + [miner_spec(g).boot_seconds + miner_spec(g).min_watts / RAMP_WATTS_PER_S for g in site.miners]
                  + [0.0])
    return int(np.ceil(longest / trace.step_seconds)) + 3


def _combine(parts: list[Optimum], *, limits_of: tuple[BacktestSite, Trace]) -> Optimum:
    site, trace = limits_of
    _, _, shortfall = _limits(site, trace, _paths(site))
    gaps = [p.mip_gap for p in parts if p.mip_gap is not None]
    statuses = sorted({p.status for p in parts})
    return Optimum(
        margin_usd=sum(p.margin_usd for p in parts), bound_usd=sum(p.bound_usd for p in parts),
        mining_usd=sum(p.mining_usd for p in parts), ai_usd=sum(p.ai_usd for p in parts),
        power_usd=sum(p.power_usd for p in parts), switching_usd=sum(p.switching_usd for p in parts),
        energy_mwh=sum(p.energy_mwh for p in parts), integer=parts[0].integer, switching=parts[0].switching,
        status=statuses[0] if len(statuses) == 1 else "/".join(statuses), mip_gap=max(gaps) if gaps else None,
        columns=sum(p.columns for p in parts), rows=sum(p.rows for p in parts),
        build_seconds=sum(p.build_seconds for p in parts), solve_seconds=sum(p.solve_seconds for p in parts),
        shortfall=shortfall, miner_watts=tuple(w for p in parts for w in p.miner_watts),
        gpu_watts=tuple(w for p in parts for w in p.gpu_watts), windows=len(parts),
    )


def _solve(
    site: BacktestSite, trace: Trace, integer: bool, physics: bool, time_limit_s: float,
    live_from: int, live_to: int, core_from: int, core_to: int,
) -> Optimum:
    """The optimum of ``trace``, or of the window of a longer one (rows bind on live steps only,
    money counts on core steps only)."""
    began = time.perf_counter()
    T = len(trace.rows)
    steps = np.arange(T)
    core = (steps >= core_from) & (steps < core_to)
    program = site_program(site, trace, physics)
    program = replace(program, live=(steps >= live_from) & (steps < live_to), core=core)
    built = build(program)
    formed = time.perf_counter()
    try:
        solution = solve(built, integer=integer, time_limit_s=time_limit_s, accept_late=integer)
    except PlanError as err:
        raise OptimumError(str(err)) from None
    solved = time.perf_counter()
    x = solution.x
    miner_w = sum((x[c.P] + (c.block.boot_watts * x[c.B] if c.B is not None else 0.0)
                   + c.block.sleep_watts * (c.block.count - x[c.on]) for c in built.miners), np.zeros(T))[core]
    gpu_w = sum((x[c.Q] + c.block.idle_watts * (c.block.count - x[c.r]) for c in built.gpus), np.zeros(T))[core]
    hours = program.length[core] / 3600
    price = program.power_usd_per_mwh[core]
    energy_mwh = float(np.sum((miner_w + gpu_w) * hours) / 1e6)
    _, _, shortfall = _limits(site, trace, _paths(site))
    return Optimum(
        margin_usd=solution.objective, bound_usd=solution.bound, mining_usd=solution.total("mining"),
        ai_usd=solution.total("ai"), power_usd=float(np.sum(price * hours * (miner_w + gpu_w)) / 1e6),
        switching_usd=solution.total("switching"), energy_mwh=energy_mwh, integer=integer, switching=physics,
        status=solution.status, mip_gap=solution.mip_gap, columns=built.lp.ncols, rows=built.lp.nrows,
        build_seconds=formed - began, solve_seconds=solved - formed, shortfall=shortfall,
        miner_watts=tuple(miner_w.tolist()), gpu_watts=tuple(gpu_w.tolist()),
    )


def site_program(site: BacktestSite, trace: Trace, physics: bool) -> SiteProgram:
    """The site program of a back-test site over a trace: every miner asleep at the start, the
    trace's prices, budgets and GPU work, the site model's switching physics (or none)."""
    clock = StepClock(np.array([(r.at - trace.rows[0].at).total_seconds() for r in trace.rows]),
                      np.array(trace.durations, dtype=float))
    rate = np.array([r.gpu_rate_usd_per_gpu_hour or 0.0 for r in trace.rows])
    demand = np.array([r.gpu_demand for r in trace.rows])
    paths = _paths(site)
    headroom, unmet, _ = _limits(site, trace, paths)
    miners = []
    for group in site.miners:
        spec = miner_spec(group)
        curve = spec_for(group.model).curve
        miners.append(MinerBlock(
            circuit=group.circuit, count=float(group.count), min_watts=spec.min_watts, max_watts=spec.max_watts,
            sleep_watts=spec.sleep_watts, nominal_watts=curve.nominal_watts, nominal_ths=curve.nominal_ths,
            curve_exponent=curve.exponent, boot_seconds=spec.boot_seconds if physics else 0.0,
            boot_watts=spec.boot_watts, wear_usd_per_cycle=spec.wear_usd_per_cycle if physics else 0.0,
            min_down_seconds=spec.min_down_seconds if physics else 0.0, ramp_watts_per_s=RAMP_WATTS_PER_S))
    gpus = []
    first = 0
    for nodes in site.gpu_nodes:
        n, G = nodes.count, nodes.gpus
        gpus.append(GpuBlock(
            circuit=nodes.circuit, count=float(n), gpus=G, idle_watts=nodes.host_idle_watts + G * nodes.gpu_idle_watts,
            host_watts=nodes.host_max_watts, cap_min_watts=nodes.cap_min_w, cap_max_watts=nodes.cap_max_w,
            usd_per_node_hour=rate * G, available=np.clip(demand - first, 0, n).astype(float),
            restart_seconds=nodes.restart_seconds, checkpoint_seconds=nodes.checkpoint_seconds,
            penalty_usd=nodes.penalty_usd, firm=nodes.tier.value == "firm"))
        first += n
    return SiteProgram(
        start=clock.start, length=clock.length,
        hashprice_usd_per_ph_day=np.array([r.hashprice_usd_per_ph_day for r in trace.rows]),
        power_usd_per_mwh=np.array([r.power_usd_per_mwh for r in trace.rows]),
        headroom_watts=headroom, paths=paths, miners=miners, gpus=gpus, gpu_cap_exponent=GPU_CAP_EXPONENT,
        unmet=unmet)


def _limits(
    site: BacktestSite, trace: Trace, paths: dict[str, list[str]],
) -> tuple[dict[str, np.ndarray], np.ndarray, Shortfall | None]:
    """Headroom over the idle draw per circuit and step, the steps no policy can meet, and why."""
    idle_on = _idle_by_circuit(site, paths)
    T = len(trace.rows)
    unmet = np.zeros(T, dtype=bool)
    headroom: dict[str, np.ndarray] = {}
    worst = (0.0, "", 0)
    for circuit in site.circuit_limits():
        limit = np.array([true_limits(site, row.budget_watts)[circuit] for row in trace.rows])
        if circuit == SITE_CIRCUIT:
            limit = limit - site.reserve_watts
        headroom[circuit] = limit - idle_on[circuit]
        short = headroom[circuit] < -1e-6
        unmet |= short
        if short.any() and -float(np.min(headroom[circuit])) > worst[0]:
            worst = (-float(np.min(headroom[circuit])), circuit, int(np.argmax(short)))
    if not unmet.any():
        return headroom, unmet, None
    first = trace.rows[int(np.argmax(unmet))].at.isoformat()
    at = frozenset(trace.rows[i].at.isoformat() for i in np.flatnonzero(unmet))
    return headroom, unmet, Shortfall(int(unmet.sum()), first, worst[1], worst[0] / 1000, at)


def _paths(site: BacktestSite) -> dict[str, list[str]]:
    parents = site.circuit_parents()
    paths: dict[str, list[str]] = {}
    for circuit in parents:
        path: list[str] = []
        node: str | None = circuit
        while node is not None:
            path.append(node)
            node = parents[node]
        paths[circuit] = path
    return paths


def _idle_by_circuit(site: BacktestSite, paths: dict[str, list[str]]) -> dict[str, float]:
    idle = dict.fromkeys(site.circuit_limits(), 0.0)
    for group in site.miners:
        for c in paths[group.circuit]:
            idle[c] += group.count * miner_spec(group).sleep_watts
    for g in site.gpu_nodes:
        for c in paths[g.circuit]:
            idle[c] += g.count * (g.host_idle_watts + g.gpus * g.gpu_idle_watts)
    return idle
