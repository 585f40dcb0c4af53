"""Arithmetic on the tree of nested limits (site > transformer/feeder > container/PDU).

Pure functions over plain numbers, shared by the policy (what fits) and the sequencer (what is
safe to send now). A load on a circuit counts against that circuit and every ancestor, the way
current through a PDU also flows through its transformer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True, slots=True)
class Violation:
    circuit: str
    load_watts: float
    limit_watts: float

    def __str__(self) -> str:
        return f"{self.circuit}: {self.load_watts:.0f} W over its {self.limit_watts:.0f} W limit"


class LimitTree:
    def __init__(self, limits: Mapping[str, float], parents: Mapping[str, str | None]) -> None:
        unknown = set(limits) ^ set(parents)
        if unknown:
            raise ValueError(f"circuits without both a limit and a parent: {sorted(unknown)}")
        self.limits = dict(limits)
        self.parents = dict(parents)

    @cached_property
    def _paths(self) -> dict[str, tuple[str, ...]]:
        paths: dict[str, tuple[str, ...]] = {}
        for circuit in self.limits:
            path: list[str] = []
            node: str | None = circuit
            while node is not None:
                if node in path:
                    raise ValueError(f"circuit {circuit!r} is its own ancestor")
                path.append(node)
                node = self.parents[node]
            paths[circuit] = tuple(path)
        return paths

    def path(self, circuit: str) -> tuple[str, ...]:
        """The circuit and its ancestors up to the site."""
        return self._paths[circuit]

    def loads(self, draws: Iterable[tuple[str, float]]) -> dict[str, float]:
        """Total draw on each circuit, from (circuit, watts) pairs of devices."""
        totals = dict.fromkeys(self.limits, 0.0)
        for circuit, watts in draws:
            for node in self._paths[circuit]:
                totals[node] += watts
        return totals

    def headroom(self, circuit: str, loads: Mapping[str, float]) -> float:
        """How much more a device on ``circuit`` may draw without any ancestor going over."""
        return min(self.limits[node] - loads[node] for node in self._paths[circuit])

    def add(self, circuit: str, watts: float, loads: dict[str, float]) -> None:
        for node in self._paths[circuit]:
            loads[node] += watts

    def violations(self, loads: Mapping[str, float], tolerance: float = 1e-6) -> list[Violation]:
        return [
            Violation(c, loads[c], limit)
            for c, limit in self.limits.items()
            if loads[c] > limit + tolerance
        ]
