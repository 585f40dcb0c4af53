"""A linear program over steps of time, built in blocks of one column (or row) per step, and HiGHS.

Every quantity of the site program (:mod:`wattshift.planning.site_program`) is a time average over
a step, so columns and rows come in blocks of ``T``: one per step. Entries are gathered as numpy
triplets and handed to HiGHS column-wise in one go: a 30-day, 5-minute program of a few hundred
thousand columns builds in a second.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import highspy
import numpy as np

MIP_REL_GAP = 1e-4  # stated, not HiGHS's default by accident: the report gives the gap reached


class StepClock:
    """Step starts and lengths in seconds, and windows of steps by clock time."""

    def __init__(self, start: np.ndarray, length: np.ndarray) -> None:
        self.start = np.asarray(start, dtype=float)
        self.length = np.asarray(length, dtype=float)
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

    def reach(self, seconds: float) -> int:
        """How many steps a window of ``seconds`` (plus a step each side) can span."""
        return int(np.ceil(seconds / max(1.0, self.step))) + 2


class LinearProgram:
    """Columns and rows added in blocks of one per step, entries as numpy triplets."""

    def __init__(self, steps: int, live: np.ndarray | None = None, core: np.ndarray | None = None) -> None:
        self.T = steps
        # A window of a longer horizon: rows bind only on live steps, money counts only on core
        # steps; the other columns are the free history and future of the window.
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


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """HiGHS prints its banner on the C stdout (file descriptor 1) when the process makes its first
    solver, before any option can be set: point descriptor 1 at stderr meanwhile, so a command
    that prints JSON prints pure JSON."""
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


def new_solver(*, time_limit_s: float) -> highspy.Highs:
    """A quiet HiGHS instance with a time limit and the stated MIP gap.

    No thread count is set: HiGHS sizes one scheduler per process at its first run, and an
    instance asking for another count afterwards does not run at all (status "Not Set")."""
    with _stdout_to_stderr():
        h = highspy.Highs()  # type: ignore[no-untyped-call]
        h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("mip_rel_gap", MIP_REL_GAP)
    return h
