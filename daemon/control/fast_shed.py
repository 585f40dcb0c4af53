"""Shed at once when a limit drops: from the last snapshot, before the fleet is read again.

A tick reads the whole fleet before it decides (seconds at a thousand miners, a minute and more
at ten thousand). When the budget falls (an MQTT ``budget`` command, a budget event of the
schedule coming within its lead time) or a circuit limit does, that read stands between the
event and the sheds. The fast shed decides on the snapshot the loop already has, with the new
limits, through the same policy and sequencer, and sends only the sheds, with the actuator's
deadlines; the normal tick follows at once and reads, confirms and may grant.

Why the last snapshot is safe to shed from
------------------------------------------
A snapshot counts every device at its worst case: what it may draw before the loop next hears
from it (``MinerState.worst_case_watts``; unknown means its maximum, a waking miner counts on and
at its limit). Those figures stay upper bounds of the draw for as long as nothing could have
raised a draw since, and the only thing that raises a draw is the loop itself: the normal tick
already relies on this between its reads (a miner that wakes by itself is caught by the regular
read, fast path or not). So the basis of a fast shed is the last snapshot *plus everything the
loop commanded since its reads began* (:class:`CommandsSince`, recorded before each command goes
out, so one whose answer is lost still counts):

- a grant sent since (a limit raised, a wake) is folded in: a miner counts at the highest limit
  commanded and as waking (on, at that limit), never below the step's own ``worst_after``; a
  GPU node granted since counts at its maximum (its caps and job state are not modelled here).
  This is not a corner case: a tick sends its last plan's grants *after* its last read, and the
  drivers' read-back confirms the setting, not the draw, so the snapshot a tick leaves behind
  does not show its own grants;
- a shed sent since changes nothing in the count (its release is not believed until telemetry
  shows it, as in the sequencer), but it is what the device now holds: the fast shed sends a
  device only a setting below the last one commanded (:func:`lowering`), so a stale reading
  can never turn into a raise;
- a device whose command failed is distrusted (the controller's memory, ``DISTRUST_SECONDS``)
  and a device whose worst case rose since (driver dropped, read lost) is unknown: both count at
  their maximum, and are sent nothing, as the normal observe does;
- a miner waking in the snapshot stays waking (on, at its limit) even if its boot allowance
  ran out since (``memory.still_waking``): only a read may take it as asleep.

Each fast step lowers its device below both its count in the basis and its last command, so
after the fast shed every device still draws at most what the basis counted: the fast shed can
only bring the site's worst case down. It never grants, never wakes, and a cut below what sheds
can reach (unknown devices, firm loads, idle floors) still sheds everything the policy can shed.

When the controller does not take the fast path (``Controller.shed_now``), and why
--------------------------------------------------------------------------------
- no snapshot yet, or actuation held (``--dry-run``, manual mode): the next tick does it;
- the snapshot is older than two tick intervals plus the last tick's own length
  (:func:`refusal`): the regular loop would have read again by then, so something stalled it,
  and a stalled loop's picture of the site is not one to act on;
- a tick is acting (between its first plan and its end: grants may be in flight, and the
  tick's plan counts on the old limits): the fast shed waits for that tick, which stops waiting
  for confirmations and grants nothing more; a fast shed already running is followed by
  another. A tick that is only reading does not stop the fast shed: nothing is in flight then
  (the tick waits for a fast shed to land before it reads), the readings are upper bounds
  whatever the sheds do, and the tick then holds its grants until a read after the sheds;
- no limit dropped below what the snapshot was planned with: nothing to shed.

Pure: snapshot, commands and limits in, snapshot and steps out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypeVar

from wattshift.model.budget import BudgetSchedule
from wattshift.model.miner import Failure
from wattshift.model.snapshot import GpuNodeState, MinerState, SiteSnapshot

from .sequencer import Action, Step

L = TypeVar("L", MinerState, GpuNodeState)

# A snapshot older than this many tick intervals (plus the last tick's length) is not shed from.
MAX_AGE_TICKS = 2.0


@dataclass
class CommandsSince:
    """What the loop commanded, and which worst cases rose, since the reads of its last
    snapshot began. Each record carries the sequence number it was made under; a new snapshot
    forgets only the records made before its reads began (:meth:`forget`)."""

    seq: int = 0
    steps: list[tuple[int, Step]] = field(default_factory=list)
    rose: dict[str, tuple[int, Failure]] = field(default_factory=dict)

    def mark(self) -> int:
        """Taken before a read: what a snapshot from that read may forget."""
        self.seq += 1
        return self.seq

    def sent(self, steps: Iterable[Step]) -> None:
        self.seq += 1
        self.steps.extend((self.seq, s) for s in steps)

    def worst_rose(self, device_id: str, failure: Failure) -> None:
        self.seq += 1
        self.rose[device_id] = (self.seq, failure)

    def forget(self, mark: int) -> None:
        self.steps = [(n, s) for n, s in self.steps if n > mark]
        self.rose = {d: (n, f) for d, (n, f) in self.rose.items() if n > mark}

    def commanded(self) -> dict[str, float]:
        """The last setting commanded to each device (0: asleep)."""
        return {s.device_id: (0.0 if s.action is Action.SLEEP else s.watts) for _, s in self.steps}


def refusal(
    last: SiteSnapshot | None, *, clock: float, tick_seconds: float, last_tick_seconds: float, holding: bool
) -> str | None:
    """Why the fast shed may not be taken now (None: it may)."""
    if holding:
        return "actuation is held (dry run or manual mode)"
    if last is None:
        return "no snapshot yet"
    age = clock - last.clock
    bound = MAX_AGE_TICKS * tick_seconds + last_tick_seconds
    if age > bound:
        return f"the last snapshot is {age:.0f} s old (more than {bound:.0f} s)"
    return None


def shed_basis(
    last: SiteSnapshot,
    since: CommandsSince,
    *,
    distrusted: Collection[str],
    state_since: Mapping[str, float | None],
    budget_watts: float,
    circuit_limits: Mapping[str, float],
    at: datetime,
    clock: float,
) -> SiteSnapshot:
    """The last snapshot with what was commanded since folded in and the limits in force now:
    every load counted at no less than it may draw now (see the module's argument).
    ``state_since``: the loop's memory of each device's last on/off change, for the dwell
    times; ``budget_watts``: the site limit to plan against, reserve and overhead taken off."""
    granted: dict[str, list[Step]] = {}
    for _, step in since.steps:
        if not step.is_shed:
            granted.setdefault(step.device_id, []).append(step)

    def fold(load: L) -> L:
        device_id = load.device_id
        if device_id in since.rose:
            return _unknown(load, since.rose[device_id][1])
        if device_id in distrusted:
            return _unknown(load, Failure.IGNORED)
        if device_id in granted:
            load = _granted(load, granted[device_id])
        if device_id in state_since and load.state_since != state_since[device_id]:
            load = replace(load, state_since=state_since[device_id])
        return load

    return replace(
        last,
        at=at,
        clock=clock,
        budget_watts=budget_watts,
        circuit_limits=circuit_limits,
        miners=tuple(fold(m) for m in last.miners),
        gpu_nodes=tuple(fold(n) for n in last.gpu_nodes),
    )


def _unknown(load: L, failure: Failure) -> L:
    """Counted at its maximum and sent nothing: a miner without a trusted reading, a node
    with no card heard (its caps as read would count it below what a grant allowed)."""
    if isinstance(load, MinerState):
        return replace(load, failure=load.failure or failure)
    return replace(load, readings=(), failure=load.failure or failure)


def _granted(load: L, steps: list[Step]) -> L:
    """A load as the grants sent to it since its reading left it: a miner at the highest limit
    commanded and waking if it was woken; anything else at its maximum."""
    if not isinstance(load, MinerState) or load.reading is None or not load.controllable:
        return _unknown(load, Failure.IGNORED) if isinstance(load, GpuNodeState) else load
    limit = max([load.reading.limit_watts or 0.0, *(s.watts for s in steps)])
    woken = load.waking or any(s.action is Action.WAKE for s in steps)
    folded = replace(load, reading=replace(load.reading, limit_watts=limit), waking=woken)
    if folded.worst_case_watts < max(s.worst_after for s in steps):
        return _unknown(load, Failure.IGNORED)  # not expected; then the count is its maximum
    return folded


def lowering(sheds: Iterable[Step], commanded: Mapping[str, float]) -> tuple[Step, ...]:
    """The sheds that lower their device below the last setting commanded to it since the
    snapshot: the basis may still show a device as it was before a shed sent since, and a
    "shed" from that picture could be a raise from what the device now holds."""
    return tuple(s for s in sheds if s.device_id not in commanded or s.watts < commanded[s.device_id])


def limits_dropped(before: Mapping[str, float], after: Mapping[str, float]) -> list[str]:
    """The circuits whose limit is lower in ``after`` (the site's: the budget)."""
    return [c for c, limit in after.items() if limit < before.get(c, float("inf"))]


def next_budget_change(schedule: BudgetSchedule, now: datetime) -> datetime | None:
    """The next instant after ``now`` at which the budget to plan against may change: an
    event's start or end entering the lead window, or leaving its near end."""
    instants = [
        t
        for event in schedule.events()
        for boundary in (event.start, event.end)
        if boundary is not None
        for t in (boundary - schedule.lead, boundary)
        if t > now
    ]
    return min(instants, default=None)

