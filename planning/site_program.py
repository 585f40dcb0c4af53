"""The site's money over a horizon as one linear program: miners and GPU nodes in groups, every step.

Two users, one program. The back-test's hindsight optimum (``daemon/backtest/optimum.py``) builds
it over a whole trace, every miner asleep at the start, and must stay an **upper bound** on what
any policy the site model admits can make: every row below is one the site model really imposes,
relaxed where the exact rule is not linear (the proof, rule by rule, is in docs/backtest.md, "Why
it is a bound"). The ``lookahead`` policy builds it over a forecast, from the site as it stands
(``awake``, ``booting``, ``asleep_for``, ``running``), and acts on its first steps.

Identical devices on one circuit form a group; every quantity is a time average over a step. Per
step a miner group has ``on`` miners awake (``0..n``), of which ``B`` boot (they draw
``boot_watts`` and hash nothing) and ``on - B`` hash, at total power ``P`` and hashrate ``R``.
Hashrate is concave in power, so it is bounded by tangent lines ``f(p) <= a_j + b_j p``; for ``h``
miners sharing ``P`` that is ``R <= a_j h + b_j P`` (the perspective of the curve), linear in
both. Starts and stops conserve the count (``on_t - on_(t-1) = st_t - sp_t``); a start costs the
wear of a cycle and owes ``boot_seconds`` of booting right after it; a miner stopped less than
``min_down_seconds`` ago stays off. Minimum up time is not a row: a limit may always stop a miner
early, so imposing it would cut off real runs (the policy keeps it when it acts).

A GPU group has ``r`` nodes running (at most the nodes with work), their draw ``Q`` and their speed
``V`` (node-equivalents at full speed, bounded by tangents the same way); a start costs the job's
restart time at its rate, an interruption (a running job stopped while it still has work) its
checkpoint time and penalty. A firm job may wait while pending (the sequencer lets it), and once
running it is never stopped (the sequencer never sheds it) until its work ends.

Every circuit, every step: total draw at most its limit (given as the headroom over the idle
draw of everything under it). Steps marked ``unmet`` (a limit below that idle draw: no policy
meets it) have no limit rows and earn nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highspy
import numpy as np

from .envelope import TOLERANCE, PowerLaw, tangents
from .program import LinearProgram, StepClock, new_solver


class PlanError(RuntimeError):
    """No solution: the message says why (the solver's status)."""


@dataclass(frozen=True, slots=True)
class MinerBlock:
    """``count`` identical miners on one circuit, and how they stand where the horizon begins."""

    circuit: str
    count: float
    min_watts: float
    max_watts: float
    sleep_watts: float
    nominal_watts: float
    nominal_ths: float
    curve_exponent: float
    boot_seconds: float = 0.0
    boot_watts: float = 0.0
    wear_usd_per_cycle: float = 0.0
    min_down_seconds: float = 0.0
    ramp_watts_per_s: float | None = None  # None: a hashing miner is at its power at once
    awake: float = 0.0  # awake just before the first step
    booting: float = 0.0  # of those, still booting
    asleep_for: tuple[float, ...] = ()  # per miner stopped lately: seconds from the start it must stay off


@dataclass(frozen=True, slots=True)
class GpuBlock:
    """``count`` identical GPU nodes on one circuit with work of one value."""

    circuit: str
    count: float
    gpus: int
    idle_watts: float  # host idle plus every card idle: a node with no job running
    host_watts: float  # the host's busy draw
    cap_min_watts: float
    cap_max_watts: float
    usd_per_node_hour: np.ndarray  # per step: the job's rate times its GPUs
    available: np.ndarray  # per step: nodes with work
    restart_seconds: float
    checkpoint_seconds: float
    penalty_usd: float
    firm: bool
    running: float = 0.0  # running just before the first step


@dataclass(frozen=True)
class SiteProgram:
    """Everything the program needs, per step: clock, prices and the headroom of every circuit."""

    start: np.ndarray  # seconds from the first step
    length: np.ndarray
    hashprice_usd_per_ph_day: np.ndarray
    power_usd_per_mwh: np.ndarray
    headroom_watts: dict[str, np.ndarray]  # limit less the idle draw of everything under it
    paths: dict[str, list[str]]  # circuit -> itself and every circuit above it
    miners: list[MinerBlock]
    gpus: list[GpuBlock]
    gpu_cap_exponent: float
    unmet: np.ndarray | None = None  # steps no policy can meet: no limit rows, nothing earned
    live: np.ndarray | None = None  # rows bind on these steps only (a window of a longer horizon)
    core: np.ndarray | None = None  # money counts on these steps only
    # How far the tangents may overshoot the concave curves: the bound keeps them tight; a plan
    # that only acts on its first steps can take a looser envelope and fewer rows.
    envelope_tolerance: float = TOLERANCE


@dataclass
class MinerColumns:
    on: np.ndarray
    P: np.ndarray
    B: np.ndarray | None
    block: MinerBlock


@dataclass
class GpuColumns:
    r: np.ndarray
    Q: np.ndarray
    block: GpuBlock


@dataclass
class Built:
    program: SiteProgram
    lp: LinearProgram
    miners: list[MinerColumns] = field(default_factory=list)
    gpus: list[GpuColumns] = field(default_factory=list)
    money: dict[str, list[tuple[np.ndarray, object]]] = field(
        default_factory=lambda: {"mining": [], "ai": [], "switching": []})
    idle_watts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of everything, per step


@dataclass(frozen=True)
class Solution:
    built: Built
    x: np.ndarray
    objective: float  # money over the core steps, less the idle draw's cost
    bound: float  # for a MIP: the dual bound, same terms
    status: str
    mip_gap: float | None
    optimal: bool

    def total(self, kind: str) -> float:
        core = self.built.lp.core.astype(bool)
        T = self.built.lp.T
        return float(sum(np.sum(self.x[cols][core] * np.broadcast_to(np.asarray(coef, float), (T,))[core])
                         for cols, coef in self.built.money[kind]))


def build(p: SiteProgram) -> Built:
    clock = StepClock(p.start, p.length)
    T = clock.T
    unmet = np.zeros(T, dtype=bool) if p.unmet is None else p.unmet
    m = LinearProgram(T, p.live, p.core)
    hours = clock.length / 3600
    earns = np.where(unmet, 0.0, np.inf)  # nothing is earned where no policy keeps the limit
    watt_cost = p.power_usd_per_mwh * hours / 1e6  # $ per watt held over the step
    out = Built(p, m, idle_watts=np.zeros(T))
    draws: dict[str, list[tuple[np.ndarray, object]]] = {c: [] for c in p.headroom_watts}
    first = np.arange(T) == 0

    for g in p.miners:
        n, idle = float(g.count), g.sleep_watts
        on = m.cols(upper=n, cost=watt_cost * idle, integer=True)
        P = m.cols(upper=n * g.max_watts, cost=-watt_cost)
        per_ths = p.hashprice_usd_per_ph_day * hours / 24 / 1000
        R = m.cols(upper=earns, cost=per_ths)
        st = m.cols(upper=n, cost=-g.wear_usd_per_cycle)
        sp = m.cols(upper=n)
        before = clock.shifted(on, -1)
        awake0 = np.where(first, g.awake, 0.0)  # the step before the first, as a constant
        # Awake changes by starts less stops, exactly: a start (stop) at a share s of the way
        # into step t counts 1 - s in step t and s in step t + 1 (the step averages move so).
        m.rows([(on, 1.0), (before, -1.0), (st, -1.0), (sp, 1.0)], lower=awake0, upper=awake0)
        hashing: list[tuple[np.ndarray, float]] = [(on, 1.0)]
        B = None
        if g.boot_seconds > 0:
            B = m.cols(upper=n, cost=-watt_cost * g.boot_watts)
            m.rows([(B, 1.0), (on, -1.0)], upper=0.0)
            hashing.append((B, -1.0))
            # Boot owed by starts (see docs/backtest.md: a start's mass may sit in the next step).
            # Boot of at least a step: miners started in the last floor(boot/step) steps all boot.
            # Shorter: the boot of step t's starts lies in steps t-1 and t. Never across a gap.
            whole = int(g.boot_seconds // clock.step)
            # ... and only miners started within a boot (and a step) ago boot (or were booting
            # where the horizon began): awake is hashing.
            since = int(np.ceil(g.boot_seconds / clock.step))
            booting = np.where(clock.start < g.boot_seconds, g.booting, 0.0)
            m.rows([(B, 1.0), *[(clock.shifted(st, -d), -1.0) for d in range(since + 1)]], upper=booting)
            if whole >= 1:
                terms = [(clock.shifted(st, -d), -1.0 * clock.joined(d)) for d in range(whole)]
                m.rows([(B, 1.0), *terms], lower=0.0)
            else:
                m.rows([(B, clock.length), (clock.shifted(B, -1), clock.length * clock.joined(1)),
                        (st, -g.boot_seconds * clock.joined(1))], lower=0.0)
        if g.min_down_seconds > 0:
            # Miners stopped in steps that end within min_down of t's end are still off in t,
            # and so are those stopped before the horizon, until their own time is up.
            def recent(t: np.ndarray, u: np.ndarray, _d: float = g.min_down_seconds) -> np.ndarray:
                return np.asarray((u <= t) & (clock.end[t] - clock.start[u] <= _d + 1e-9))

            held = (np.sum(np.asarray(g.asleep_for, float)[None, :] > clock.start[:, None], axis=1)
                    if g.asleep_for else np.zeros(T))
            terms = [(clock.shifted(sp, d), mask.astype(float))
                     for d, mask in clock.offsets(recent, clock.reach(g.min_down_seconds))]
            m.rows([(on, 1.0), *terms], upper=n - held)
            if g.min_down_seconds >= clock.step:
                # Down at least a step: a start's share of a step was asleep in the step before,
                # a stop's share is asleep in its own step (docs/backtest.md).
                m.rows([(st, 1.0), (before, 1.0)], upper=n - awake0 - np.where(first, held, 0.0))
                m.rows([(sp, 1.0), (on, 1.0)], upper=n)
        # Hashing miners draw at least their minimum, less what a ramp up from the floor takes: a
        # wake ramps at ramp_watts_per_s once booted, and that ramp may fall in any step from the
        # start's to one a boot later (a start's mass may sit in the next step: see the docs).
        if g.ramp_watts_per_s:
            ramp_joules = g.min_watts ** 2 / (2 * g.ramp_watts_per_s)
            ramp_s = g.boot_seconds + g.min_watts / g.ramp_watts_per_s

            def ramped(t: np.ndarray, u: np.ndarray, _s: float = ramp_s) -> np.ndarray:
                return np.asarray((u <= t + 1) & (clock.start[t] < clock.start[u] + _s))

            allowance = [(clock.shifted(st, d), ramp_joules / clock.length * mask)
                         for d, mask in clock.offsets(ramped, clock.reach(ramp_s))]
        else:
            allowance = []
        m.rows([(P, 1.0), *[(c, -g.min_watts * k) for c, k in hashing], *allowance], lower=0.0)
        floor = min(g.sleep_watts, g.boot_watts)  # a ramp starts from sleep (or boot) draw
        m.rows([(P, 1.0), *[(c, -floor * k) for c, k in hashing]], lower=0.0)
        m.rows([(P, 1.0), *[(c, -g.max_watts * k) for c, k in hashing]], upper=0.0)
        curve = PowerLaw(g.nominal_ths / g.nominal_watts ** (1 / g.curve_exponent), 0.0, 1 / g.curve_exponent)
        for a, b in tangents(curve, g.min_watts, g.max_watts, p.envelope_tolerance):
            m.rows([(R, 1.0), *[(c, -a * k) for c, k in hashing], (P, -b)], upper=0.0)
        for c in p.paths[g.circuit]:
            draws[c] += [(P, 1.0), (on, -idle)] + ([(B, g.boot_watts)] if B is not None else [])
        out.idle_watts += n * idle
        out.money["mining"].append((R, per_ths))
        out.money["switching"].append((st, g.wear_usd_per_cycle))
        out.miners.append(MinerColumns(on, P, B, g))

    for gb in p.gpus:
        n, G, idle, host = gb.count, gb.gpus, gb.idle_watts, gb.host_watts
        qmin, qmax = host + G * gb.cap_min_watts, host + G * gb.cap_max_watts
        avail = np.asarray(gb.available, float)
        rate = np.asarray(gb.usd_per_node_hour, float)
        # A pending job may wait, firm or not; a firm one may start at any cap (never lowered after).
        r = m.cols(upper=avail, cost=watt_cost * idle, integer=True)
        Q = m.cols(upper=n * qmax, cost=-watt_cost)
        V = m.cols(upper=earns, cost=rate * hours)
        restart = rate * gb.restart_seconds / 3600
        interrupt = gb.penalty_usd + rate * gb.checkpoint_seconds / 3600
        s = m.cols(cost=-restart)
        u = m.cols(cost=-interrupt)
        m.rows([(Q, 1.0), (r, -qmin)], lower=0.0)
        m.rows([(Q, 1.0), (r, -qmax)], upper=0.0)
        m.rows([(V, 1.0), (r, -1.0)], upper=0.0)
        for a, b in tangents(PowerLaw((1 / (G * gb.cap_max_watts)) ** (1 / p.gpu_cap_exponent), host,
                                      1 / p.gpu_cap_exponent), qmin, qmax, p.envelope_tolerance):
            m.rows([(V, 1.0), (r, -a), (Q, -b)], upper=0.0)
        before = clock.shifted(r, -1)
        running0 = np.where(first, gb.running, 0.0)
        prior = np.concatenate([[gb.running], avail[:-1]])
        ended = np.maximum(0.0, prior - avail)
        m.rows([(s, 1.0), (r, -1.0), (before, 1.0)], lower=-running0)  # starts >= rise in running
        m.rows([(u, 1.0), (r, 1.0), (before, -1.0)], lower=running0 - ended)  # stops beyond finished work
        if gb.firm:
            m.rows([(r, 1.0), (before, -1.0)], lower=running0 - ended)  # running firm work is never stopped
        for c in p.paths[gb.circuit]:
            draws[c] += [(Q, 1.0), (r, -idle)]
        out.idle_watts += n * idle
        out.money["ai"].append((V, rate * hours))
        out.money["switching"] += [(s, restart), (u, interrupt)]
        out.gpus.append(GpuColumns(r, Q, gb))

    for circuit, headroom in p.headroom_watts.items():
        if draws[circuit]:
            m.rows(draws[circuit], upper=np.where(unmet, np.inf, headroom))
    return out


def solve(
    built: Built, *, integer: bool = False, time_limit_s: float = 600.0, accept_late: bool = False,
) -> Solution:
    """Solve ``built``; ``accept_late``: a MIP stopped by the time limit with an incumbent counts.

    Raises :class:`PlanError` when HiGHS finds no solution in time (or none exists)."""
    h = new_solver(time_limit_s=time_limit_s)
    h.passModel(built.lp.lp(integer))
    h.run()
    model_status = h.getModelStatus()
    status = h.modelStatusToString(model_status)
    info = h.getInfo()
    optimal = model_status == highspy.HighsModelStatus.kOptimal
    found = optimal or (integer and accept_late and model_status == highspy.HighsModelStatus.kTimeLimit
                        and info.primal_solution_status == 2)
    if not found:
        raise PlanError(f"HiGHS did not find the optimum: {status}")
    x = np.asarray(h.getSolution().col_value)
    idle_cost = float(np.sum(built.program.power_usd_per_mwh * built.lp.core * StepClock(
        built.program.start, built.program.length).length / 3600 / 1e6 * built.idle_watts))
    objective = info.objective_function_value - idle_cost
    bound = info.mip_dual_bound - idle_cost if integer else objective
    return Solution(built, x, float(objective), float(max(bound, objective)), status,
                    float(info.mip_gap) if integer else None, optimal)
