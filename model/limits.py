"""Arithmetic on the tree of nested limits (site > transformer/feeder > container/PDU).

Pure functions over plain numbers, shared by the policy (what fits) and the sequencer (what is
safe to send now). A load on a circuit counts against that circuit and every ancestor, the way
current through a PDU also flows through its transformer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property, reduce
from itertools import compress, islice
from operator import add, itemgetter, ne

_first, _second = itemgetter(0), itemgetter(1)
_SHORT_RUN = 4  # draws per run of one circuit, on average, below which loads() goes draw by draw


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
        """Total draw on each circuit, from (circuit, watts) pairs of devices.

        Every total is added up draw by draw in the order given: the policy and the sequencer
        compare these sums with limits to the watt, so their floats must not depend on how the
        draws are grouped. Draws mostly come circuit by circuit (a container's miners one after
        another): a run of draws on one circuit is added to each circuit on its path by one
        ``reduce``, the same additions in the same order, in C. Draws in no order (runs shorter
        than ``_SHORT_RUN`` on average) go draw by draw, which costs less than cutting them up.
        """
        pairs = list(draws)
        circuits = list(map(_first, pairs))
        # Where each run of one circuit starts.
        starts = [0, *compress(range(1, len(pairs)), map(ne, circuits, islice(circuits, 1, None)))]
        totals = dict.fromkeys(self.limits, 0.0)
        paths = self._paths
        if len(starts) * _SHORT_RUN > len(pairs):
            for circuit, watts in pairs:
                for node in paths[circuit]:
                    totals[node] += watts
            return totals
        each = list(map(_second, pairs))
        for start, end in zip(starts, [*islice(starts, 1, None), len(pairs)], strict=True):
            run = each[start:end]
            for node in paths[circuits[start]]:
                totals[node] = reduce(add, run, totals[node])
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
