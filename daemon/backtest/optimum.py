"""The hindsight optimum of a trace: a linear program over every step at once, solved by HiGHS.

With perfect foresight of prices, budgets and GPU work, what is the most margin the site could
have made under the same limits? The back-test divides a policy's margin by this, so it must be
an **upper bound** on what any policy the site model admits can make: every constraint below is
one the site model (and the sequencer in front of it) really imposes, relaxed where the exact
rule is not linear. The proof, rule by rule, is in docs/backtest.md ("Why it is a bound").

Identical devices on one circuit form a group; every quantity is a time average over a step.
Per step a miner group has ``on`` miners awake (``0..n``), of which ``B`` boot (they draw
``boot_watts`` and hash nothing) and ``on - B`` hash, at total power ``P`` and hashrate ``R``.
Hashrate is concave in power, so it is bounded by tangent lines ``f(p) <= a_j + b_j p``; for
``h`` miners sharing ``P`` that is ``R <= a_j h + b_j P`` (the perspective of the curve), linear in
both. Starts and stops conserve the count (``on_t - on_(t-1) = st_t - sp_t``); a start costs the
wear of a cycle and owes ``boot_seconds`` of booting right after it; a miner stopped less than
``min_down_seconds`` ago stays off. ``min_up_seconds`` is *not* imposed: a limit may always stop a
miner early (the site model allows it and counts it), so imposing it would cut off real runs.

A GPU group has ``r`` nodes running (at most the nodes with work), their draw ``Q`` and their speed
``V`` (node-equivalents at full speed, bounded by tangents the same way); a start costs the job's
restart time at its rate, an interruption (a running job stopped while it still has work) its
checkpoint time and penalty. A firm job may wait while pending (the sequencer lets it), and once
running it is never stopped (the sequencer never sheds it) until its work ends.

Every circuit, every step: total draw at most its limit, the site at most the budget in force
less the reserve. Where even the idle draw of everything is over a limit, no policy can meet it:
those steps are reported as a shortfall, have no limit rows and earn nothing (a policy's money
while over a limit does not count either, see the back-test report).

By default on-counts are continuous (an LP, the proven bound). ``integer=True`` makes them integer
(a MIP): tighter, slower, solved to ``MIP_REL_GAP``; its dual bound is reported beside the incumbent
and the ratio is taken against the bound.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import highspy
import numpy as np

from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.specs import MinerSpec
from wattshift.policies.ladders import GPU_CAP_EXPONENT

from .envelope import PowerLaw, tangents
from .replay import true_limits
from .site import BacktestSite, MinerCount, spec_for
from .site_model import RAMP_WATTS_PER_S
from .trace import Trace

MIP_REL_GAP = 1e-4  # stated, not HiGHS's default by accident: the report gives the gap reached
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


class _Model:
    """Columns and rows added in blocks of one per step, entries as numpy triplets."""

    def __init__(self, steps: int, live: np.ndarray | None = None, core: np.ndarray | None = None) -> None:
        self.T = steps
        # A window of a longer trace (see solve_optimum): rows bind only on live steps, money
        # counts only on core steps; the other columns are the free history and future of the window.
        self.live = np.ones(steps, dtype=bool) if live is None else live
        self.core = np.ones(steps) if core is None else core.astype(float)
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.row_lower: list[np.ndarray] = []
        self.row_upper: list[np.ndarray] = []
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.ncols = 0
        self.nrows = 0

    def cols(
        self, *, lower: object = 0.0, upper: object = np.inf, cost: object = 0.0, integer: bool = False
    ) -> np.ndarray:
        idx = np.arange(self.ncols, self.ncols + self.T)
        self.ncols += self.T
        self.lower.append(np.broadcast_to(np.asarray(lower, float), (self.T,)).copy())
        self.upper.append(np.broadcast_to(np.asarray(upper, float), (self.T,)).copy())
        self.cost.append(np.broadcast_to(np.asarray(cost, float), (self.T,)) * self.core)
        self.integer.append(np.full(self.T, integer))
        return idx

    def rows(self, terms: list[tuple[np.ndarray, object]], *, lower: object = -np.inf, upper: object = np.inf) -> None:
        """One row per step: sum of coef * column over ``terms`` within [lower, upper]."""
        idx = np.arange(self.nrows, self.nrows + self.T)
        self.nrows += self.T
        self.row_lower.append(np.where(self.live, np.broadcast_to(np.asarray(lower, float), (self.T,)), -np.inf))
        self.row_upper.append(np.where(self.live, np.broadcast_to(np.asarray(upper, float), (self.T,)), np.inf))
        for cols, coef in terms:
            values = np.broadcast_to(np.asarray(coef, float), (self.T,))
            mask = (cols >= 0) & (values != 0)  # -1: no column (before the first step, after the last)
            self.entries.append((idx[mask], cols[mask], values[mask]))

    def lp(self, integer: bool) -> highspy.HighsLp:
        lp = highspy.HighsLp()
        lp.num_col_ = self.ncols
        lp.num_row_ = self.nrows
        lp.col_cost_ = np.concatenate(self.cost)
        lp.col_lower_ = np.concatenate(self.lower)
        lp.col_upper_ = np.concatenate(self.upper)
        lp.row_lower_ = np.concatenate(self.row_lower)
        lp.row_upper_ = np.concatenate(self.row_upper)
        rows = np.concatenate([e[0] for e in self.entries])
        cols = np.concatenate([e[1] for e in self.entries])
        vals = np.concatenate([e[2] for e in self.entries])
        order = np.argsort(cols, kind="stable")
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.num_col_ = self.ncols
        lp.a_matrix_.num_row_ = self.nrows
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=self.ncols))]).astype(np.int32)
        lp.a_matrix_.index_ = rows[order].astype(np.int32)
        lp.a_matrix_.value_ = vals[order]
        lp.sense_ = highspy.ObjSense.kMaximize
        if integer:
            flags = np.concatenate(self.integer)
            lp.integrality_ = [highspy.HighsVarType.kInteger if f else highspy.HighsVarType.kContinuous for f in flags]
        return lp


class _Clock:
    """Step starts and lengths in seconds, and windows of steps by clock time."""

    def __init__(self, trace: Trace) -> None:
        first = trace.rows[0].at
        self.start = np.array([(r.at - first).total_seconds() for r in trace.rows])
        self.length = np.array(trace.durations, dtype=float)
        self.end = self.start + self.length
        self.T = len(self.start)
        self.step = float(np.min(self.length))

    def joined(self, d: int) -> np.ndarray:
        """Whether steps ``t - d .. t`` follow one another with no gap (1.0) or not (0.0)."""
        out = np.zeros(self.T)
        if d == 0:
            return out + 1.0
        t = np.arange(d, self.T)
        out[d:] = np.abs(self.start[t] - self.start[t - d] - np.sum(
            [self.length[t - k] for k in range(1, d + 1)], axis=0)) < 1e-6
        return out

    def shifted(self, cols: np.ndarray, d: int) -> np.ndarray:
        """The column of step ``t + d`` for every ``t`` (-1 where there is none)."""
        out = np.full(self.T, -1)
        if d >= 0:
            out[: self.T - d] = cols[d:]
        else:
            out[-d:] = cols[: self.T + d]
        return out

    def offsets(
        self, within: Callable[[np.ndarray, np.ndarray], np.ndarray], reach: int,
    ) -> list[tuple[int, np.ndarray]]:
        """``(d, mask)`` for ``d`` in ``-reach..reach``: whether step ``t + d`` is ``within(t, t + d)``."""
        t = np.arange(self.T)
        out = []
        for d in range(-reach, reach + 1):
            u = np.clip(t + d, 0, self.T - 1)
            mask = (t + d >= 0) & (t + d < self.T) & within(t, u)
            if mask.any():
                out.append((d, mask))
        return out


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
    live = (steps >= live_from) & (steps < live_to)
    core = (steps >= core_from) & (steps < core_to)
    clock = _Clock(trace)
    hours = clock.length / 3600
    hashprice = np.array([r.hashprice_usd_per_ph_day for r in trace.rows])
    price = np.array([r.power_usd_per_mwh for r in trace.rows])
    rate = np.array([r.gpu_rate_usd_per_gpu_hour or 0.0 for r in trace.rows])
    demand = np.array([r.gpu_demand for r in trace.rows])
    paths = _paths(site)
    limits, unmet, shortfall = _limits(site, trace, paths)
    earns = np.where(unmet, 0.0, np.inf)  # nothing is earned where no policy keeps the limit
    m = _Model(T, live, core)
    constant = np.zeros(T)  # idle draw of everything, in watts: taken off the limits
    draws: dict[str, list[tuple[np.ndarray, object]]] = {c: [] for c in site.circuit_limits()}
    miner_cols: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, float, float, float]] = []
    gpu_cols: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    money: dict[str, list[tuple[np.ndarray, object]]] = {"mining": [], "ai": [], "switching": []}
    watt_cost = price * hours / 1e6  # $ per watt held over the step

    for group in site.miners:
        spec = miner_spec(group)
        curve = spec_for(group.model).curve
        n, idle = float(group.count), spec.sleep_watts
        boot_s = spec.boot_seconds if physics else 0.0
        wear = spec.wear_usd_per_cycle if physics else 0.0
        min_down = spec.min_down_seconds if physics else 0.0
        on = m.cols(upper=n, cost=watt_cost * idle, integer=True)
        P = m.cols(upper=n * spec.max_watts, cost=-watt_cost)
        per_ths = hashprice * hours / 24 / 1000
        R = m.cols(upper=earns, cost=per_ths)
        st = m.cols(upper=n, cost=-wear)
        sp = m.cols(upper=n)
        before = clock.shifted(on, -1)  # every miner starts asleep: none awake before the first step
        # Awake changes by starts less stops, exactly: a start (stop) at a share s of the way
        # into step t counts 1 - s in step t and s in step t + 1 (the step averages move so).
        m.rows([(on, 1.0), (before, -1.0), (st, -1.0), (sp, 1.0)], lower=0.0, upper=0.0)
        hashing: list[tuple[np.ndarray, float]] = [(on, 1.0)]
        B = None
        if boot_s > 0:
            B = m.cols(upper=n, cost=-watt_cost * spec.boot_watts)
            m.rows([(B, 1.0), (on, -1.0)], upper=0.0)
            hashing.append((B, -1.0))
            # Boot owed by starts (see docs/backtest.md: a start's mass may sit in the next step).
            # Boot of at least a step: miners started in the last floor(boot/step) steps all boot.
            # Shorter: the boot of step t's starts lies in steps t-1 and t. Never across a gap.
            whole = int(boot_s // clock.step)
            # ... and only miners started within a boot (and a step) ago boot: awake is hashing.
            since = int(np.ceil(boot_s / clock.step))
            m.rows([(B, 1.0), *[(clock.shifted(st, -d), -1.0) for d in range(since + 1)]], upper=0.0)
            if whole >= 1:
                terms = [(clock.shifted(st, -d), -1.0 * clock.joined(d)) for d in range(whole)]
                m.rows([(B, 1.0), *terms], lower=0.0)
            else:
                m.rows([(B, clock.length), (clock.shifted(B, -1), clock.length * clock.joined(1)),
                        (st, -boot_s * clock.joined(1))], lower=0.0)
        if min_down > 0:
            # Miners stopped in steps that end within min_down of t's end are still off in t.
            def recent(t: np.ndarray, u: np.ndarray, _d: float = min_down) -> np.ndarray:
                return np.asarray((u <= t) & (clock.end[t] - clock.start[u] <= _d + 1e-9))

            terms = [(clock.shifted(sp, d), mask.astype(float))
                     for d, mask in clock.offsets(recent, _reach(clock, min_down))]
            m.rows([(on, 1.0), *terms], upper=n)
            if min_down >= clock.step:
                # Down at least a step: a start's share of a step was asleep in the step before,
                # a stop's share is asleep in its own step (docs/backtest.md).
                m.rows([(st, 1.0), (before, 1.0)], upper=n)
                m.rows([(sp, 1.0), (on, 1.0)], upper=n)
        # Hashing miners draw at least their minimum, less what a ramp up from the floor takes: a
        # wake ramps at RAMP_WATTS_PER_S once booted, and that ramp may fall in any step from the
        # start's to one a boot later (a start's mass may sit in the next step: see the docs).
        ramp_joules = spec.min_watts ** 2 / (2 * RAMP_WATTS_PER_S)
        ramp_s = boot_s + spec.min_watts / RAMP_WATTS_PER_S

        def ramped(t: np.ndarray, u: np.ndarray, _s: float = ramp_s) -> np.ndarray:
            return np.asarray((u <= t + 1) & (clock.start[t] < clock.start[u] + _s))

        allowance = [(clock.shifted(st, d), ramp_joules / clock.length * mask)
                     for d, mask in clock.offsets(ramped, _reach(clock, ramp_s))]
        m.rows([(P, 1.0), *[(c, -spec.min_watts * k) for c, k in hashing], *allowance], lower=0.0)
        floor = min(spec.sleep_watts, spec.boot_watts)  # a ramp starts from sleep (or boot) draw
        m.rows([(P, 1.0), *[(c, -floor * k) for c, k in hashing]], lower=0.0)
        m.rows([(P, 1.0), *[(c, -spec.max_watts * k) for c, k in hashing]], upper=0.0)
        for a, b in tangents(PowerLaw(curve.nominal_ths / curve.nominal_watts ** (1 / curve.exponent), 0.0,
                                      1 / curve.exponent), spec.min_watts, spec.max_watts):
            m.rows([(R, 1.0), *[(c, -a * k) for c, k in hashing], (P, -b)], upper=0.0)
        for c in paths[group.circuit]:
            draws[c] += [(P, 1.0), (on, -idle)] + ([(B, spec.boot_watts)] if B is not None else [])
        constant += n * idle
        money["mining"].append((R, per_ths))
        money["switching"].append((st, wear))
        miner_cols.append((on, P, B, spec.boot_watts, idle, n))

    first = 0
    for nodes in site.gpu_nodes:
        n, G = nodes.count, nodes.gpus
        idle = nodes.host_idle_watts + G * nodes.gpu_idle_watts
        host = nodes.host_max_watts
        qmin, qmax = host + G * nodes.cap_min_w, host + G * nodes.cap_max_w
        avail = np.clip(demand - first, 0, n).astype(float)
        first += n
        usd_per_node_hour = rate * G
        # A pending job may wait, firm or not; a firm one may start at any cap (never lowered after).
        r = m.cols(upper=avail, cost=watt_cost * idle, integer=True)
        Q = m.cols(upper=n * qmax, cost=-watt_cost)
        V = m.cols(upper=earns, cost=usd_per_node_hour * hours)
        restart = usd_per_node_hour * nodes.restart_seconds / 3600
        interrupt = nodes.penalty_usd + usd_per_node_hour * nodes.checkpoint_seconds / 3600
        s = m.cols(cost=-restart)
        u = m.cols(cost=-interrupt)
        m.rows([(Q, 1.0), (r, -qmin)], lower=0.0)
        m.rows([(Q, 1.0), (r, -qmax)], upper=0.0)
        m.rows([(V, 1.0), (r, -1.0)], upper=0.0)
        for a, b in tangents(PowerLaw((1 / (G * nodes.cap_max_w)) ** (1 / GPU_CAP_EXPONENT), host,
                                      1 / GPU_CAP_EXPONENT), qmin, qmax):
            m.rows([(V, 1.0), (r, -a), (Q, -b)], upper=0.0)
        before = clock.shifted(r, -1)
        ended = np.maximum(0.0, np.concatenate([[0.0], avail[:-1]]) - avail)
        m.rows([(s, 1.0), (r, -1.0), (before, 1.0)], lower=0.0)  # starts >= rise in running
        m.rows([(u, 1.0), (r, 1.0), (before, -1.0)], lower=-ended)  # stops beyond finished work
        if nodes.tier.value == "firm":
            m.rows([(r, 1.0), (before, -1.0)], lower=-ended)  # running firm work is never stopped
        for c in paths[nodes.circuit]:
            draws[c] += [(Q, 1.0), (r, -idle)]
        constant += n * idle
        money["ai"].append((V, usd_per_node_hour * hours))
        money["switching"] += [(s, restart), (u, interrupt)]
        gpu_cols.append((r, Q, idle, float(n)))

    for circuit, limit in limits.items():
        if draws[circuit]:
            m.rows(draws[circuit], upper=np.where(unmet, np.inf, limit))

    h = _highs()
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", MIP_REL_GAP)
    h.passModel(m.lp(integer))
    built = time.perf_counter()
    h.run()
    solved = time.perf_counter()
    model_status = h.getModelStatus()
    status = h.modelStatusToString(model_status)
    info = h.getInfo()
    found = model_status == highspy.HighsModelStatus.kOptimal or (
        integer and model_status == highspy.HighsModelStatus.kTimeLimit and info.primal_solution_status == 2)
    if not found:
        raise OptimumError(f"HiGHS did not find the optimum: {status}")
    x = np.asarray(h.getSolution().col_value)
    idle_cost = float(np.sum(watt_cost * constant * core))
    objective = info.objective_function_value - idle_cost
    bound = info.mip_dual_bound - idle_cost if integer else objective
    miner_w = sum((x[P] + (bw * x[B] if B is not None else 0.0) + idle * (n - x[on])
                   for on, P, B, bw, idle, n in miner_cols), np.zeros(T))[core]
    gpu_w = sum((x[Q] + idle * (n - x[r]) for r, Q, idle, n in gpu_cols), np.zeros(T))[core]
    hours, price = hours[core], price[core]
    energy_mwh = float(np.sum((miner_w + gpu_w) * hours) / 1e6)

    def total(kind: str) -> float:
        return float(sum(np.sum(x[cols][core] * np.broadcast_to(np.asarray(coef, float), (T,))[core])
                         for cols, coef in money[kind]))

    return Optimum(
        margin_usd=float(objective), bound_usd=float(max(bound, objective)), mining_usd=total("mining"),
        ai_usd=total("ai"), power_usd=float(np.sum(price * hours * (miner_w + gpu_w)) / 1e6),
        switching_usd=total("switching"), energy_mwh=energy_mwh, integer=integer, switching=physics,
        status=status, mip_gap=float(info.mip_gap) if integer else None, columns=m.ncols, rows=m.nrows,
        build_seconds=built - began, solve_seconds=solved - built, shortfall=shortfall,
        miner_watts=tuple(miner_w.tolist()), gpu_watts=tuple(gpu_w.tolist()),
    )


def _reach(clock: _Clock, seconds: float) -> int:
    """How many steps a window of ``seconds`` (plus a step each side) can span."""
    return int(np.ceil(seconds / max(1.0, float(np.min(clock.length))))) + 2


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


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """HiGHS prints its banner on the C stdout (file descriptor 1) when the process makes its first
    solver, before any option can be set: point descriptor 1 at stderr meanwhile, so ``--json``
    prints pure JSON."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1 at all: nothing to keep clean
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _highs() -> highspy.Highs:
    with _stdout_to_stderr():
        h = highspy.Highs()  # type: ignore[no-untyped-call]
        h.setOptionValue("output_flag", False)
    return h


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
