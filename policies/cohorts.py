"""Water-filling by cohorts: identical loads climb their ladders together.

A site of 10,000 miners holds a handful of models. Miners of one model, in one state, have the
same ladder, so the merit order's rungs come in runs of equal value, one per miner, differing
only in the device id that breaks the tie. :class:`CohortFill` takes the rungs the way the
per-load heap of :mod:`wattshift.policies.merit_order` does, with the same result to the watt,
but one run at a time:

- a ladder is built once per group of identical loads (:func:`group_key` says what identical
  means: everything a ladder, a threshold or a dwell time reads);
- every member of a run that fits is granted at once, when the run fits every circuit on every
  member's path taken whole (the sum is accumulated add by add, as the heap would, so the
  floats agree exactly); a run that fits for nobody is refused at once;
- only a run that fits in part is taken member by member in device-id order, as the heap would.

The heap breaks ties between equal values by device id; runs of equal value from different
groups are therefore merged and taken member by member. A rung that is worth at least the one
before it (a negative first-rung bonus, a linear curve) is taken right after it, as the heap
would pop it next.

Pure arithmetic on plain numbers; the policy supplies the rules (threshold, trust, dwell).
"""

from __future__ import annotations

import dataclasses
import heapq
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import repeat
from typing import Any

from wattshift.model.limits import LimitTree
from wattshift.model.snapshot import GpuJob, GpuNodeState, Load
from wattshift.model.specs import MinerSwitching

from .ladders import Ladder

# Everything about a job but what names it: its terms are what its ladder is made of.
_job_terms = operator.attrgetter(*(f.name for f in dataclasses.fields(GpuJob) if f.name not in ("job_id", "name")))
# A miner's switching by its numbers (plain floats: hashed and compared in C).
_switching_terms = operator.attrgetter(*(f.name for f in dataclasses.fields(MinerSwitching)))


def group_key(load: Load) -> tuple[Any, ...]:
    """What a load's ladder and the rules applied to it depend on, its identity left out.

    Two loads with equal keys get equal ladders from :func:`wattshift.policies.ladders.ladder_for`,
    equal thresholds and equal dwell times. Anything a ladder or a rule comes to read must be
    added here; ``tests/policies/test_cohorts.py`` compares this path with the per-load one.
    """
    if isinstance(load, GpuNodeState):
        job = load.job
        job_key = _job_terms(job) if job is not None else None
        return (GpuNodeState, load.gpu_model, load.gpu_count, load.host_idle_watts, load.host_max_watts,
                load.cap_min_watts, load.cap_max_watts, load.is_on, load.idle_watts, job_key)
    return (type(load), load.model, load.capability, load.curve, load.max_watts, load.is_on, load.idle_watts,
            load.switching)


class Grouper:
    """Numbers loads by :func:`group_key`. Hashing and comparing a miner's capability, curve
    and switching (dataclasses: their hash and equality run in Python) for every miner is most
    of the cost, so a cheaper key is tried first: the capability and the curve by identity (a
    handful of objects on a site), the switching by its numbers (every miner may have its own)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], int] = {}
        self.first: list[int] = []  # the index, in the loads grouped, of each group's first member
        self._quick: dict[tuple[Any, ...], int] = {}

    def groups(self, loads: Sequence[Load]) -> list[int]:
        """The group of each load, numbered from 0 in the order of their first members."""
        quick = self._quick
        out: list[int] = []
        last: tuple[Any, ...] | None = None  # the key of the miner before: loads come group by group
        g = -1
        for load in loads:
            if isinstance(load, GpuNodeState):
                out.append(self._number(group_key(load), len(out)))
                last = None
                continue
            on = load.is_on
            # An idle draw is the measured one only while off (MinerState.idle_watts).
            key = (id(load.capability), id(load.curve), _switching_terms(load.switching), load.model,
                   load.max_watts, on, None if on else load.idle_watts)
            if key != last:
                g = quick.get(key, -1)
                if g < 0:
                    g = quick[key] = self._number(group_key(load), len(out))
                last = key
            out.append(g)
        return out

    def _number(self, key: tuple[Any, ...], index: int) -> int:
        g = self.by_key.setdefault(key, len(self.by_key))
        if g == len(self.first):
            self.first.append(index)
        return g


@dataclass(frozen=True, slots=True)
class Group:
    """Identical loads, with the rules the policy gives them."""

    ladder: Ladder  # the first member's: the same for every member but for ``load``
    trusted: bool
    threshold: float  # a rung worth less than this stops the load (when trusted)
    dwell_seconds: float


@dataclass
class FillResult:
    granted: list[float]
    last_value: list[float | None]
    blocked: dict[int, str]
    # Member i ended at outcomes[outcome[i]]: (its group, the watts granted, the value of the
    # last rung taken), the same for every member of the group that ended on the same rung.
    outcome: list[int]
    outcomes: list[tuple[int, float, float | None]]


class CohortFill:
    """One decision over ``members``, the loads the policy may place; ``group_of[i]`` is the
    group of member ``i`` (results are indexed the same way).

    ``loads`` is the draw on every circuit before any rung is taken (changed in place);
    ``tightest(circuit, loads)`` says why a rung did not fit.
    """

    def __init__(self, tree: LimitTree, loads: dict[str, float], groups: Sequence[Group],
                 members: Sequence[Load], group_of: Sequence[int], clock: float,
                 tightest: Callable[[str, Mapping[str, float]], str]) -> None:
        self.tree = tree
        self.loads = loads
        self.groups = groups
        self.members = members
        self.group_of = group_of
        self.clock = clock
        self._tightest = tightest
        self._why: dict[str, str] = {}  # tightest() by circuit, valid until the next grant
        self.values = [[g.ladder.value(k) for k in range(len(g.ladder.levels))] for g in groups]
        self.deltas = [_deltas(g.ladder) for g in groups]
        self.chain_end = [_chain_end(v) for v in self.values]
        # The first rung past which a load may not climb: its ladder's end, or while prices are
        # stale, the first setting above the limit it holds now.
        lengths = [len(g.ladder.levels) if g.trusted else -1 for g in groups]
        self.stop = [lengths[g] if lengths[g] >= 0 else self._stop(m, g)
                     for m, g in zip(members, group_of, strict=True)]
        self.top = [-1] * len(members)  # the last rung taken
        self.blocked: dict[int, str] = {}
        self.pending: dict[tuple[int, int], list[int]] = {}
        self.heap: list[tuple[float, int, int]] = []

    def _stop(self, m: Load, g: int) -> int:
        group = self.groups[g]
        levels = group.ladder.levels
        if group.trusted:
            return len(levels)
        limit = m.limit_watts
        if limit is None:
            return len(levels)
        for index in range(1, len(levels)):
            if levels[index] > limit + 1.0:
                return index
        return len(levels)

    def run(self) -> FillResult:
        self._start()
        while self.heap:
            value = -self.heap[0][0]
            runs = []
            while self.heap and -self.heap[0][0] == value:
                _, g, k = heapq.heappop(self.heap)
                runs.append((g, k, self.pending.pop((g, k))))
            self._take_runs(value, runs)
        outcomes: list[tuple[int, float, float | None]] = []
        untaken = []  # the outcome of each group's members that took no rung
        for g, group in enumerate(self.groups):
            untaken.append(len(outcomes))
            outcomes.append((g, 0.0, None))
            outcomes.extend(zip(repeat(g), group.ladder.levels, self.values[g]))
        outcome = [untaken[g] + top + 1 for g, top in zip(self.group_of, self.top, strict=True)]
        ended = list(map(outcomes.__getitem__, outcome))
        granted, last = list(map(operator.itemgetter(1), ended)), list(map(operator.itemgetter(2), ended))
        return FillResult(granted, last, self.blocked, outcome, outcomes)

    def _start(self) -> None:
        """The heap's first pushes, and the loads that stay on through their dwell time."""
        groups = self.groups
        can_run = [bool(g.ladder.levels) for g in groups]
        on = [g.ladder.load.is_on for g in groups]
        first: list[list[int]] = [[] for _ in groups]  # the members whose next rung is the first
        clock = self.clock
        for i, (m, g) in enumerate(zip(self.members, self.group_of, strict=True)):
            if not can_run[g]:
                continue
            since = m.state_since
            dwelling = since is not None and clock - since < groups[g].dwell_seconds
            if dwelling and on[g]:
                if self._fits(i, 0):  # stays on through its dwell time, if the limits allow at all
                    self._pend(i, 1)
                continue
            if not on[g] and (dwelling or not groups[g].trusted):
                self.blocked[i] = "holding off (dwell time)" if dwelling else "holding off (prices stale)"
                continue
            first[g].append(i)  # as _pend(i, 0): a ladder's first rung is never past its stop
        for g, run in enumerate(first):
            if run:
                self.pending[(g, 0)] = run
                heapq.heappush(self.heap, (-self.values[g][0], g, 0))

    def _pend(self, i: int, k: int) -> None:
        """Rung ``k`` is member ``i``'s next one (rung ``k - 1`` was taken)."""
        self.top[i] = k - 1
        if k >= self.stop[i]:
            return
        g = self.group_of[i]
        run = self.pending.get((g, k))
        if run is None:
            self.pending[(g, k)] = [i]
            heapq.heappush(self.heap, (-self.values[g][k], g, k))
        else:
            run.append(i)

    def _take_runs(self, value: float, runs: list[tuple[int, int, list[int]]]) -> None:
        live = []
        for g, k, run in runs:
            group = self.groups[g]
            if group.trusted and value < group.threshold:
                continue  # these loads' further rungs are worth even less: they stop here
            live.append((g, k, run))
        if not live:
            return
        deltas = {self.deltas[g][k] for g, k, _ in live}
        if len(deltas) == 1 and all(self.chain_end[g][k] == k for g, k, _ in live):
            delta = deltas.pop()
            every = [i for _, _, run in live for i in run]
            if delta > 0 and self._all_fit(every, delta):
                for g, k, run in live:
                    self._climb(g, k, run)
                return
            if self._none_fit(every, delta):
                for i in every:
                    self._refuse(i)
                return
        # In part: member by member, in the heap's order.
        order = sorted(((self.members[i].device_id, i, k) for _, k, run in live for i in run))
        for _, i, k in order:
            self._one(i, k)

    def _one(self, i: int, k: int) -> None:
        """Member ``i`` takes rung ``k`` and, right after, every later rung worth as much."""
        g = self.group_of[i]
        group = self.groups[g]
        start = self.values[g][k]
        index = k
        while True:
            if index > k and group.trusted and self.values[g][index] < group.threshold:
                self.top[i] = index - 1
                return
            if not self._fits(i, index):
                return
            index += 1
            if index >= self.stop[i] or self.values[g][index] < start:
                self._pend(i, index)
                return

    def _fits(self, i: int, k: int) -> bool:
        """The heap's take(): grant rung ``k`` if it fits, else say why not."""
        m = self.members[i]
        delta = self.deltas[self.group_of[i]][k]
        loads, limits = self.loads, self.tree.limits
        path = self.tree.path(m.circuit)
        if min(limits[node] - loads[node] for node in path) < delta:
            self._refuse(i)
            return False
        for node in path:
            loads[node] += delta
        self.top[i] = k
        self._why.clear()
        return True

    def _refuse(self, i: int) -> None:
        circuit = self.members[i].circuit
        why = self._why.get(circuit)
        if why is None:
            why = self._why[circuit] = self._tightest(circuit, self.loads)
        self.blocked[i] = why

    def _counts(self, every: list[int]) -> Counter[str]:
        """How many of ``every`` hang below each circuit."""
        leaves = Counter(self.members[i].circuit for i in every)
        counts: Counter[str] = Counter()
        for leaf, n in leaves.items():
            for node in self.tree.path(leaf):
                counts[node] += n
        return counts

    def _all_fit(self, every: list[int], delta: float) -> bool:
        """Every member fits, taken one after another: the last one below each circuit does.
        On success the loads are updated, add by add, as the members would have been."""
        limits = self.tree.limits
        after = {}
        for node, n in self._counts(every).items():
            before_last = reduce(operator.add, repeat(delta, n - 1), self.loads[node])
            if limits[node] - before_last < delta:
                return False
            after[node] = before_last + delta
        self.loads.update(after)
        self._why.clear()
        return True

    def _none_fit(self, every: list[int], delta: float) -> bool:
        leaves = {self.members[i].circuit for i in every}
        return all(self.tree.headroom(leaf, self.loads) < delta for leaf in leaves)

    def _climb(self, g: int, k: int, run: list[int]) -> None:
        """Every member of ``run`` took rung ``k``; rung ``k + 1`` is next (it is worth less)."""
        nxt = k + 1
        if nxt < len(self.values[g]) and self.groups[g].trusted:
            for i in run:
                self.top[i] = k
            key = (g, nxt)
            existing = self.pending.get(key)
            if existing is None:
                self.pending[key] = run
                heapq.heappush(self.heap, (-self.values[g][nxt], g, nxt))
            else:
                existing.extend(run)
            return
        for i in run:
            self._pend(i, nxt)


def _deltas(ladder: Ladder) -> list[float]:
    levels = ladder.levels
    return [levels[k] - (levels[k - 1] if k else ladder.off_watts) for k in range(len(levels))]


def _chain_end(values: list[float]) -> list[int]:
    """For each rung, the last later rung reached without a rung worth less in between."""
    ends = []
    for k, start in enumerate(values):
        end = k
        while end + 1 < len(values) and values[end + 1] >= start:
            end += 1
        ends.append(end)
    return ends
