"""Tangent lines over a concave power law, placed so the envelope overshoots by at most ``tol``.

The optimum bounds hashrate (and GPU speed) by tangent lines of its concave curve: never below
the curve, so the bound stays a bound; above it between two tangents. Evenly spaced tangents
overshoot most where the curve bends most (a GPU node near its lowest cap: 0.167% with ten
of them), so the points are placed one after the other, each as far from the last as the
overshoot allows. :func:`overshoot` measures what a set of lines really gives on a fine grid.

The curves are ``f(x) = c * (x - shift) ** g`` with ``0 < g <= 1``: a miner's hashrate in watts
(``shift`` 0, ``g = 1/exponent``) and a GPU node's speed share in node watts (``shift`` its
host draw, ``g = 1/3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TOLERANCE = 5e-4  # relative: the envelope is within 0.05% of the curve between lo and hi


@dataclass(frozen=True, slots=True)
class PowerLaw:
    scale: float
    shift: float
    power: float

    def __call__(self, x: float) -> float:
        return float(self.scale * (x - self.shift) ** self.power)

    def slope(self, x: float) -> float:
        return float(self.scale * self.power * (x - self.shift) ** (self.power - 1))


def tangents(f: PowerLaw, lo: float, hi: float, tol: float = TOLERANCE) -> list[tuple[float, float]]:
    """``(intercept, slope)`` of tangent lines at points from ``lo`` to ``hi`` (both included)."""
    return list(_tangents(f, lo, hi, tol))


@lru_cache(maxsize=1024)  # a planning policy asks for the same few curves at every plan
def _tangents(f: PowerLaw, lo: float, hi: float, tol: float) -> tuple[tuple[float, float], ...]:
    if hi <= lo:
        return (_line(f, lo),)
    points = [lo]
    while points[-1] < hi:
        here = points[-1]
        if _worst(f, here, hi) <= tol:
            points.append(hi)
            break
        near, far = here, hi  # bisect for the farthest next point that keeps the overshoot
        for _ in range(60):
            mid = (near + far) / 2
            near, far = (mid, far) if _worst(f, here, mid) <= tol else (near, mid)
        points.append(near)
    return tuple(_line(f, x) for x in points)


def overshoot(f: PowerLaw, lines: list[tuple[float, float]], lo: float, hi: float, samples: int = 20_001) -> float:
    """The largest ``envelope / curve - 1`` on ``samples`` points from ``lo`` to ``hi``."""
    x = np.linspace(lo, hi, samples)
    curve = f.scale * (x - f.shift) ** f.power
    envelope = np.min([a + b * x for a, b in lines], axis=0)
    return float(np.max(envelope / curve - 1))


def _line(f: PowerLaw, x: float) -> tuple[float, float]:
    b = f.slope(x)
    return f(x) - b * x, b


def _worst(f: PowerLaw, x1: float, x2: float) -> float:
    """Relative overshoot of two tangents where they cross (the envelope's worst point between)."""
    a1, b1 = _line(f, x1)
    a2, b2 = _line(f, x2)
    if b1 - b2 <= 0:
        return 0.0
    x = (a2 - a1) / (b1 - b2)
    return float((a1 + b1 * x) / f(x) - 1)
