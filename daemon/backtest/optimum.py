"""The hindsight optimum of a trace: a linear program over every step at once, solved by HiGHS.

With perfect foresight of prices, budgets and GPU work, what is the most margin the site could
have made under the same limits? The back-test divides a policy's margin by this.

Identical devices on one circuit form a group; per step a miner group has ``k`` miners on
(``0..n``), their total power ``P`` (``k * min .. k * max``) and their hashrate ``R``. Hashrate
is concave in power, so it is bounded by tangent lines ``f(p) <= a_j + b_j p``; for ``k`` miners
sharing ``P`` that is ``R <= a_j k + b_j P`` (the perspective of the curve), linear in both, and
exact where a tangent touches. Miners off draw their sleep watts. A GPU group has ``r`` nodes
running (at most the nodes with work), their draw ``Q`` and their speed ``V`` (node-equivalents
at full speed, concave in the cap, bounded the same way); a start costs the job's restart time
at its rate, an interruption (a running job stopped while it still has work) its checkpoint time
and penalty. Every circuit, every step: total draw at most its limit, the site at most the
budget in force less the reserve.

By default ``k`` and ``r`` are continuous and there are no dwell times: a relaxation, so the
optimum is an **upper bound** on any policy's margin and the ratio a policy reaches against it is
conservative. The tangent envelope over-estimates the curve between tangents (by well under
0.1% with the default spacing), which again only raises the bound. ``integer=True`` makes the
on-counts integer (a MIP): tighter, slower, still without dwell times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from wattshift.model.fields import SITE_CIRCUIT
from wattshift.policies.ladders import GPU_CAP_EXPONENT

from .replay import true_limits
from .site import BacktestSite, spec_for
from .trace import Trace

TANGENTS = 10  # per curve; spacing ~200 W on a miner: the envelope is within ~0.05% of the curve


class OptimumError(RuntimeError):
    """No solution: the message says why (infeasible budget, solver status)."""


@dataclass(frozen=True, slots=True)
class Optimum:
    margin_usd: float
    mining_usd: float
    ai_usd: float
    power_usd: float
    switching_usd: float
    energy_mwh: float
    integer: bool
    status: str
    columns: int
    rows: int
    build_seconds: float
    solve_seconds: float
    miner_watts: tuple[float, ...]  # mean draw per step, for the plot
    gpu_watts: tuple[float, ...]

    def summary(self) -> dict[str, object]:
        return {
            "margin_usd": round(self.margin_usd, 2),
            "mining_revenue_usd": round(self.mining_usd, 2),
            "ai_revenue_usd": round(self.ai_usd, 2),
            "power_cost_usd": round(self.power_usd, 2),
            "switching_cost_usd": round(self.switching_usd, 2),
            "energy_mwh": round(self.energy_mwh, 4),
            "kind": "MIP (integer on-counts)" if self.integer else "LP relaxation (upper bound)",
            "status": self.status,
            "columns": self.columns,
            "rows": self.rows,
            "build_seconds": round(self.build_seconds, 3),
            "solve_seconds": round(self.solve_seconds, 3),
        }


class _Model:
    """Columns and rows added in blocks of one per step, entries as numpy triplets."""

    def __init__(self, steps: int) -> None:
        self.T = steps
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
        self.cost.append(np.broadcast_to(np.asarray(cost, float), (self.T,)).copy())
        self.integer.append(np.full(self.T, integer))
        return idx

    def rows(self, terms: list[tuple[np.ndarray, object]], *, lower: object = -np.inf, upper: object = np.inf) -> None:
        """One row per step: sum of coef * column over ``terms`` within [lower, upper]."""
        idx = np.arange(self.nrows, self.nrows + self.T)
        self.nrows += self.T
        self.row_lower.append(np.broadcast_to(np.asarray(lower, float), (self.T,)).copy())
        self.row_upper.append(np.broadcast_to(np.asarray(upper, float), (self.T,)).copy())
        for cols, coef in terms:
            mask = cols >= 0  # -1: no column (the step before the first)
            values = np.broadcast_to(np.asarray(coef, float), (self.T,))
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


def solve_optimum(site: BacktestSite, trace: Trace, *, integer: bool = False, time_limit_s: float = 600.0) -> Optimum:
    began = time.perf_counter()
    T = len(trace.rows)
    hours = np.array(trace.durations) / 3600
    hashprice = np.array([r.hashprice_usd_per_ph_day for r in trace.rows])
    price = np.array([r.power_usd_per_mwh for r in trace.rows])
    rate = np.array([r.gpu_rate_usd_per_gpu_hour or 0.0 for r in trace.rows])
    demand = np.array([r.gpu_demand for r in trace.rows])
    m = _Model(T)
    constant = np.zeros(T)  # idle draw of everything, in watts: taken off the limits
    draws: dict[str, list[tuple[np.ndarray, object]]] = {c: [] for c in site.circuit_limits()}
    paths = _paths(site)
    miner_cols: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    gpu_cols: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    money: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"mining": [], "ai": [], "switching": []}

    for group in site.miners:
        kind = spec_for(group.model)
        spec, curve = kind.spec, kind.curve
        n, idle = group.count, spec.sleep_watts
        k = m.cols(upper=n, cost=price * hours * idle / 1e6, integer=True)
        P = m.cols(upper=n * spec.max_watts, cost=-price * hours / 1e6)
        per_ths = hashprice * hours / 24 / 1000
        R = m.cols(cost=per_ths)
        m.rows([(P, 1.0), (k, -spec.min_watts)], lower=0.0)
        m.rows([(P, 1.0), (k, -spec.max_watts)], upper=0.0)
        for p in np.linspace(spec.min_watts, spec.max_watts, TANGENTS):
            f = curve.ths_at(p)
            slope = f / (curve.exponent * p)
            m.rows([(R, 1.0), (k, -(f - slope * p)), (P, -slope)], upper=0.0)
        for c in paths[group.circuit]:
            draws[c] += [(P, 1.0), (k, -idle)]
        constant += n * idle
        money["mining"].append((R, per_ths))
        miner_cols.append((k, P, idle, float(n)))

    first = 0
    for nodes in site.gpu_nodes:
        n, G = nodes.count, nodes.gpus
        idle = nodes.host_idle_watts + G * nodes.gpu_idle_watts
        host = nodes.host_max_watts
        qmin, qmax = host + G * nodes.cap_min_w, host + G * nodes.cap_max_w
        avail = np.clip(demand - first, 0, n).astype(float)
        first += n
        usd_per_node_hour = rate * G
        firm = nodes.tier.value == "firm"
        r = m.cols(lower=avail if firm else 0.0, upper=avail, cost=price * hours * idle / 1e6, integer=True)
        Q = m.cols(upper=n * qmax, cost=-price * hours / 1e6)
        V = m.cols(cost=usd_per_node_hour * hours)
        restart = usd_per_node_hour * nodes.restart_seconds / 3600
        interrupt = nodes.penalty_usd + usd_per_node_hour * nodes.checkpoint_seconds / 3600
        s = m.cols(cost=-restart)
        u = m.cols(cost=-interrupt)
        m.rows([(Q, 1.0), (r, -(qmax if firm else qmin))], lower=0.0)
        m.rows([(Q, 1.0), (r, -qmax)], upper=0.0)
        m.rows([(V, 1.0), (r, -1.0)], upper=0.0)
        for q in np.linspace(qmin, qmax, TANGENTS):
            phi = ((q - host) / (G * nodes.cap_max_w)) ** (1 / GPU_CAP_EXPONENT)
            slope = phi / (GPU_CAP_EXPONENT * (q - host))
            m.rows([(V, 1.0), (r, -(phi - slope * q)), (Q, -slope)], upper=0.0)
        before = np.concatenate([[-1], r[:-1]])
        ended = np.maximum(0.0, np.concatenate([[0.0], avail[:-1]]) - avail)
        m.rows([(s, 1.0), (r, -1.0), (before, 1.0)], lower=0.0)  # starts >= rise in running
        m.rows([(u, 1.0), (r, 1.0), (before, -1.0)], lower=-ended)  # stops beyond finished work
        for c in paths[nodes.circuit]:
            draws[c] += [(Q, 1.0), (r, -idle)]
        constant += n * idle
        money["ai"].append((V, usd_per_node_hour * hours))
        money["switching"] += [(s, restart), (u, interrupt)]
        gpu_cols.append((r, Q, idle, float(n)))

    idle_on = _idle_by_circuit(site, paths)
    for circuit in site.circuit_limits():
        limit = np.array([true_limits(site, row.budget_watts)[circuit] for row in trace.rows])
        if circuit == SITE_CIRCUIT:
            limit = limit - site.reserve_watts
        headroom = limit - idle_on[circuit]
        if np.any(headroom < -1e-6):
            at = trace.rows[int(np.argmax(headroom < -1e-6))].at
            raise OptimumError(f"infeasible: at {at.isoformat()} {circuit}'s limit is below what its devices draw idle")
        if draws[circuit]:
            m.rows(draws[circuit], upper=headroom)

    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.passModel(m.lp(integer))
    built = time.perf_counter()
    h.run()
    solved = time.perf_counter()
    status = h.modelStatusToString(h.getModelStatus())
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise OptimumError(f"HiGHS did not find the optimum: {status}")
    x = np.asarray(h.getSolution().col_value)
    idle_cost = float(np.sum(price * hours * constant / 1e6))
    objective = h.getInfo().objective_function_value - idle_cost
    miner_w = sum((x[P] + idle * (n - x[k]) for k, P, idle, n in miner_cols), np.zeros(T))
    gpu_w = sum((x[Q] + idle * (n - x[r]) for r, Q, idle, n in gpu_cols), np.zeros(T))
    energy_mwh = float(np.sum((miner_w + gpu_w) * hours) / 1e6)

    def total(kind: str) -> float:
        return float(sum(np.sum(x[cols] * coef) for cols, coef in money[kind]))

    return Optimum(
        margin_usd=float(objective), mining_usd=total("mining"), ai_usd=total("ai"),
        power_usd=float(np.sum(price * hours * (miner_w + gpu_w)) / 1e6), switching_usd=total("switching"),
        energy_mwh=energy_mwh, integer=integer, status=status, columns=m.ncols, rows=m.nrows,
        build_seconds=built - began, solve_seconds=solved - built,
        miner_watts=tuple(miner_w.tolist()), gpu_watts=tuple(gpu_w.tolist()),
    )


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
            idle[c] += group.count * spec_for(group.model).spec.sleep_watts
    for g in site.gpu_nodes:
        for c in paths[g.circuit]:
            idle[c] += g.count * (g.host_idle_watts + g.gpus * g.gpu_idle_watts)
    return idle
