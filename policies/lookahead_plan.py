"""The site as it stands, and the hours ahead, as the site program; and the program's answer as a plan.

:mod:`wattshift.policies.lookahead` plans with the same linear program the back-test's optimum
bounds with (:mod:`wattshift.planning.site_program`). This module is the translation both ways:

- **in**: the controllable loads of a snapshot in groups of identical ones (a miner model on a
  circuit with one range and one set of switching figures; GPU nodes of one shape with work of one
  value), how each group stands now (awake, booting, held asleep by its minimum down time,
  running), and per plan step the power price (published where the forecast has it, the price now
  otherwise) and the headroom of every circuit (its limit, the site's lowered by every announced
  event, less what the site must count whatever the policy says);
- **out**: per group and plan step, how many to keep on and at what power: a :class:`Plan`, plain
  numbers that survive ``json.dumps`` (a stateful policy's memory must).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wattshift.model.limits import LimitTree
from wattshift.model.snapshot import GpuNodeState, Load, MinerState, SiteSnapshot
from wattshift.planning.site_program import GpuBlock, MinerBlock, SiteProgram, Solution

from .fill import fixed, gpu_settings, miner_settings
from .ladders import GPU_CAP_EXPONENT

SITE = "site"
# The plan acts on its first steps only: an envelope within 0.2 % of the curves (the optimum's is
# within 0.05 %) decides the same and has fewer rows to solve.
PLAN_ENVELOPE_TOLERANCE = 2e-3


@dataclass(frozen=True)
class Groups:
    """The controllable loads in groups (members sorted by id), miners first."""

    miners: list[list[MinerState]]
    gpus: list[list[GpuNodeState]]
    idle: list[GpuNodeState]  # no work to run, or work of no known value: they stay off

    @property
    def signature(self) -> list[list[str]]:
        """Who is in which group: a plan made for other groups is not followed."""
        return [[m.device_id for m in g] for g in self.miners] + [[n.device_id for n in g] for g in self.gpus]


def group_loads(snapshot: SiteSnapshot) -> Groups:
    miners: dict[tuple[object, ...], list[MinerState]] = {}
    gpus: dict[tuple[object, ...], list[GpuNodeState]] = {}
    idle: list[GpuNodeState] = []
    for load in snapshot.loads:
        if fixed(load):
            continue
        if isinstance(load, MinerState):
            low, high, _ = miner_settings(load)
            key: tuple[object, ...] = (load.circuit, load.model, low, high, load.curve, load.switching)
            miners.setdefault(key, []).append(load)
            continue
        job = load.job
        if job is None or job.state.finished or job.value_usd_per_hour is None:
            idle.append(load)
            continue
        key = (load.circuit, load.gpu_count, load.host_idle_watts, load.host_max_watts, load.gpu_idle_watts,
               load.cap_min_watts, load.cap_max_watts, job.value_usd_per_hour, job.switching, job.tier)
        gpus.setdefault(key, []).append(load)
    return Groups([sorted(g, key=lambda m: m.device_id) for g in miners.values()],
                  [sorted(g, key=lambda n: n.device_id) for g in gpus.values()], idle)


def plan_steps(
    horizon_seconds: float, step_seconds: float, near_seconds: float, far_step_seconds: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine steps over the next ``near_seconds`` (what the decisions act on), coarser ones after
    (what they must leave room for): a third of the columns for the same horizon."""
    lengths: list[float] = []
    total = 0.0
    while total < horizon_seconds - 1e-6:
        lengths.append(step_seconds if total < near_seconds - 1e-6 else max(step_seconds, far_step_seconds))
        total += lengths[-1]
    length = np.array(lengths)
    return np.concatenate([[0.0], np.cumsum(length)[:-1]]), length


def site_program(
    snapshot: SiteSnapshot, groups: Groups, *, horizon_seconds: float, step_seconds: float,
    near_seconds: float, far_step_seconds: float, persistence_seconds: float,
) -> tuple[SiteProgram, np.ndarray]:
    """The program over the horizon, and the site budget it assumed per step.

    The price of a step is the price now where nothing is published; where a day-ahead price is,
    the price now still weighs ``exp(-t / persistence_seconds)`` at ``t`` ahead: the next minutes
    are more like the real-time price now than like the hour's day-ahead one."""
    start, length = plan_steps(horizon_seconds, step_seconds, near_seconds, far_step_seconds)
    T = len(start)
    now = snapshot.prices.power_usd_per_mwh or 0.0
    price = np.full(T, float(now))
    budget = np.full(T, float(snapshot.budget_watts))
    if snapshot.forecast:
        # A plan step takes the lowest announced budget over it and the mean published price;
        # beyond what the forecast covers, the last budget it announced holds.
        f_start = np.array([f.offset_seconds for f in snapshot.forecast])
        f_end = f_start + np.array([f.seconds for f in snapshot.forecast])
        f_budget = np.array([f.budget_watts for f in snapshot.forecast])
        f_price = np.array([np.nan if f.power_usd_per_mwh is None else f.power_usd_per_mwh
                            for f in snapshot.forecast])
        last = f_budget[int(np.argmax(f_start))]
        for j in range(1, T):
            within = (f_start < start[j] + length[j]) & (f_end > start[j])
            if not within.any():
                budget[j] = last
                continue
            budget[j] = float(np.min(f_budget[within]))
            published = f_price[within]
            published = published[~np.isnan(published)]
            if published.size:
                w = float(np.exp(-start[j] / persistence_seconds)) if persistence_seconds > 0 else 0.0
                price[j] = w * now + (1 - w) * float(np.mean(published))
        # What the forecast does not explain now (a cut no event announced, the overhead the
        # meter sees) is taken to last: every step keeps the same shortfall below its forecast.
        now_steps = f_start < length[0]
        if now_steps.any():
            unexplained = max(0.0, float(np.min(f_budget[now_steps])) - snapshot.budget_watts)
            budget[1:] = np.maximum(budget[1:] - unexplained, 0.0)
    budget[0] = min(budget[0], snapshot.budget_watts)
    headroom = _headroom(snapshot, budget)
    parents = snapshot.circuit_parents
    paths = {c: list(LimitTree(snapshot.effective_limits(), parents).path(c)) for c in parents}
    miners = [_miner_block(g, snapshot) for g in groups.miners]
    gpus = [_gpu_block(g, T) for g in groups.gpus]
    program = SiteProgram(start=start, length=length, hashprice_usd_per_ph_day=np.full(
        T, snapshot.prices.hashprice_usd_per_ph_day or 0.0), power_usd_per_mwh=price, headroom_watts=headroom,
        paths=paths, miners=miners, gpus=gpus, gpu_cap_exponent=GPU_CAP_EXPONENT,
        envelope_tolerance=PLAN_ENVELOPE_TOLERANCE)
    return program, budget


def _headroom(snapshot: SiteSnapshot, site_budget: np.ndarray) -> dict[str, np.ndarray]:
    """Each circuit's limit per step less what is counted whatever the policy says: every load it
    cannot command at its worst case, every other at its idle draw (the program adds the rest)."""
    tree = LimitTree(snapshot.effective_limits(), snapshot.circuit_parents)
    counted = tree.loads((d.circuit, d.worst_case_watts if fixed(d) else d.idle_watts) for d in snapshot.loads)
    own = dict(snapshot.circuit_limits)
    out = {}
    for circuit, limit in tree.limits.items():
        if circuit == SITE:
            limits = np.minimum(own.get(SITE, np.inf), site_budget)
        else:
            limits = np.full(len(site_budget), limit)
        out[circuit] = limits - counted[circuit]
    return out


def _miner_block(group: Sequence[MinerState], snapshot: SiteSnapshot) -> MinerBlock:
    first = group[0]
    low, high, _ = miner_settings(first)
    sw = first.switching
    held = []
    for m in group:
        if not m.is_on and m.state_since is not None:
            left = sw.min_down_seconds - (snapshot.clock - m.state_since)
            if left > 0:
                held.append(left)
    return MinerBlock(
        circuit=first.circuit, count=float(len(group)), min_watts=low, max_watts=high,
        sleep_watts=float(np.mean([m.idle_watts for m in group])), nominal_watts=first.curve.nominal_watts,
        nominal_ths=first.curve.nominal_ths, curve_exponent=first.curve.exponent,
        boot_seconds=sw.boot_seconds, boot_watts=sw.boot_watts, wear_usd_per_cycle=sw.wear_usd_per_cycle,
        min_down_seconds=sw.min_down_seconds, awake=float(sum(m.is_on for m in group)),
        booting=float(sum(m.waking for m in group)), asleep_for=tuple(held))


def _gpu_block(group: Sequence[GpuNodeState], steps: int) -> GpuBlock:
    first = group[0]
    job = first.job
    assert job is not None and job.value_usd_per_hour is not None  # group_loads keeps only those
    n = float(len(group))
    return GpuBlock(
        circuit=first.circuit, count=n, gpus=first.gpu_count,
        idle_watts=first.host_idle_watts + first.gpu_count * first.gpu_idle_watts, host_watts=first.host_max_watts,
        cap_min_watts=first.cap_min_watts, cap_max_watts=first.cap_max_watts,
        usd_per_node_hour=np.full(steps, job.value_usd_per_hour), available=np.full(steps, n),
        restart_seconds=job.switching.restart_seconds, checkpoint_seconds=job.switching.checkpoint_seconds,
        penalty_usd=job.switching.penalty_usd, firm=first.firm, running=float(sum(n.is_on for n in group)))


@dataclass(frozen=True)
class Plan:
    """Per plan step: per miner group (awake, of them booting, their total hashing watts), per GPU
    group (running, their total watts). ``clock`` is the loop clock it was made at."""

    clock: float
    starts: list[float]
    lengths: list[float]
    budgets: list[float]
    prices: list[float]  # the power price it assumed
    miners: list[list[tuple[float, float, float]]]  # [group][step]
    gpus: list[list[tuple[float, float]]]
    signature: list[list[str]]
    margin_usd: float

    def step_at(self, clock: float) -> int | None:
        offset = clock - self.clock
        for j, (s, length) in enumerate(zip(self.starts, self.lengths, strict=True)):
            if s - 1e-6 <= offset < s + length:
                return j
        return None

    def to_state(self) -> dict[str, object]:
        return {"clock": self.clock, "starts": self.starts, "lengths": self.lengths, "budgets": self.budgets,
                "prices": self.prices, "miners": self.miners, "gpus": self.gpus, "signature": self.signature,
                "margin_usd": self.margin_usd}

    @classmethod
    def from_state(cls, state: object) -> Plan | None:
        """The plan a previous decision kept, or None if there is none (or it is not one)."""
        if not isinstance(state, dict):
            return None
        try:
            return cls(float(state["clock"]), [float(s) for s in state["starts"]],
                       [float(s) for s in state["lengths"]], [float(b) for b in state["budgets"]],
                       [float(p) for p in state["prices"]],
                       [[(float(a), float(b), float(p)) for a, b, p in g] for g in state["miners"]],
                       [[(float(r), float(q)) for r, q in g] for g in state["gpus"]],
                       [[str(d) for d in g] for g in state["signature"]], float(state["margin_usd"]))
        except (KeyError, TypeError, ValueError):
            return None


def plan_from(
    solution: Solution, program: SiteProgram, budget: np.ndarray, groups: Groups, clock: float, keep_steps: int,
) -> Plan:
    """The first ``keep_steps`` steps of the solution: what the next decisions follow."""
    k = min(keep_steps, len(program.start))
    x = solution.x
    miners = []
    for cols in solution.built.miners:
        booting = x[cols.B][:k] if cols.B is not None else np.zeros(k)
        miners.append([(float(a), float(b), float(p)) for a, b, p in zip(x[cols.on][:k], booting, x[cols.P][:k],
                                                                         strict=True)])
    gpus = [[(float(r), float(q)) for r, q in zip(x[cols.r][:k], x[cols.Q][:k], strict=True)]
            for cols in solution.built.gpus]
    return Plan(clock, [float(s) for s in program.start[:k]], [float(s) for s in program.length[:k]],
                [float(b) for b in budget[:k]], [float(p) for p in program.power_usd_per_mwh[:k]],
                miners, gpus, groups.signature, solution.objective)


def settings_of(load: Load) -> tuple[float, float, tuple[float, ...] | None]:
    return miner_settings(load) if isinstance(load, MinerState) else gpu_settings(load)
