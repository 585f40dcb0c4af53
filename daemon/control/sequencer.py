"""Turn a wanted allocation into commands that keep every limit at every instant.

The policy says where power should be; the sequencer decides what may be sent *now*
(DESIGN.md invariants 1-3):

- sheds (lower a limit, sleep) are always safe and go first;
- grants (raise a limit, wake) go only while they fit under every circuit with every other load
  counted at its worst case, and a shed load still counted at its old draw: its release is not
  believed until telemetry shows it;
- grants that do not fit yet are deferred; the controller confirms the sheds from readings and
  plans again from a fresh snapshot;
- a miner is not woken within its minimum down time of its last stop (``MinerSwitching``): its
  wake is held, whatever a policy asks, since the hardware would refuse or wear for it. Nothing
  holds a shed: a limit always wins over a minimum up time.

Pure: snapshot and allocation in, plan out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from operator import attrgetter

from wattshift.model.limits import LimitTree
from wattshift.model.snapshot import GpuNodeState, Load, MinerState, SiteSnapshot
from wattshift.policies.base import Allocation

DEADBAND_WATTS = 50.0  # smaller changes are not worth a command (and a firmware round-trip)
_circuit, _worst_case = attrgetter("circuit"), attrgetter("worst_case_watts")


class Action(enum.StrEnum):
    SET_LIMIT = "set_limit"
    SLEEP = "sleep"
    WAKE = "wake"  # set the limit first, then wake: it must not come up at an old, higher one


@dataclass(frozen=True, slots=True, init=False)
class Step:
    device_id: str
    circuit: str
    action: Action
    watts: float  # the limit to hold (0 for sleep)
    worst_before: float
    worst_after: float
    reason: str

    def __init__(self, device_id: str, circuit: str, action: Action, watts: float, worst_before: float,
                 worst_after: float, reason: str) -> None:
        # Written out, not the dataclass's, as Target's (policies/base.py): a plan makes a Step
        # per change. Still frozen: assignment raises FrozenInstanceError.
        _set_device_id(self, device_id)
        _set_circuit(self, circuit)
        _set_action(self, action)
        _set_watts(self, watts)
        _set_worst_before(self, worst_before)
        _set_worst_after(self, worst_after)
        _set_reason(self, reason)

    @property
    def is_shed(self) -> bool:
        return self.worst_after < self.worst_before

    def describe(self) -> str:
        if self.action is Action.SLEEP:
            return f"{self.device_id}: sleep"
        verb = "wake at" if self.action is Action.WAKE else "limit"
        return f"{self.device_id}: {verb} {self.watts:.0f} W"


_set_device_id, _set_circuit, _set_action, _set_watts, _set_worst_before, _set_worst_after, _set_reason = (
    Step.__dict__[f.name].__set__ for f in fields(Step))


@dataclass(frozen=True, slots=True)
class Plan:
    sheds: tuple[Step, ...]
    grants: tuple[Step, ...]
    deferred: tuple[Step, ...]
    held: tuple[Step, ...] = ()  # wakes within a miner's minimum down time: not sent, not waited on
    # The sheds of a plan made on the last snapshot and sent before the fleet is read again
    # (controller.shed_now, fast_shed.py): no grants, and the journal says so.
    fast_shed: bool = False

    @property
    def now(self) -> tuple[Step, ...]:
        """What to send now, sheds first."""
        return self.sheds + self.grants

    @property
    def empty(self) -> bool:
        return not (self.sheds or self.grants or self.deferred)


def plan_transition(
    snapshot: SiteSnapshot, allocation: Allocation, *, deadband_watts: float = DEADBAND_WATTS
) -> Plan:
    tree = LimitTree(snapshot.effective_limits(), snapshot.circuit_parents)
    every = snapshot.loads
    loads = tree.loads(zip(map(_circuit, every), map(_worst_case, every), strict=True))
    sheds: list[Step] = []
    grants: list[Step] = []
    deferred: list[Step] = []
    held: list[Step] = []
    find, clock = snapshot.load, snapshot.clock
    for target in allocation.targets:  # merit order: the best use of freed power is granted first
        load = find(target.device_id)
        if not load.controllable:
            continue
        step = _step_for(load, target.watts, target.reason, deadband_watts)
        if step is None:
            continue
        if step.action is Action.WAKE and resting(load, clock):
            held.append(step)
            continue
        if step.is_shed:
            if isinstance(load, GpuNodeState) and load.firm:
                continue  # firm load is never curtailed, whatever a policy asks
            sheds.append(step)
            continue
        delta = step.worst_after - step.worst_before
        if tree.headroom(step.circuit, loads) >= delta:
            tree.add(step.circuit, delta, loads)
            grants.append(step)
        else:
            deferred.append(step)
    return Plan(tuple(sheds), tuple(grants), tuple(deferred), tuple(held))


def resting(load: Load, clock: float) -> bool:
    """A miner stopped less than its minimum down time ago (by the loop clock)."""
    if not isinstance(load, MinerState) or load.state_since is None:
        return False
    return clock - load.state_since < load.switching.min_down_seconds


def _step_for(load: Load, watts: float, reason: str, deadband: float) -> Step | None:
    on, before = load.is_on, load.worst_case_watts  # each made once, with the snapshot
    if watts <= 0:
        if not on:
            return None
        return Step(load.device_id, load.circuit, Action.SLEEP, 0.0, before, load.idle_watts, reason)
    if not on:
        return Step(load.device_id, load.circuit, Action.WAKE, watts, before, max(watts, before), reason)
    limit = load.limit_watts
    if limit is not None and abs(limit - watts) <= deadband:
        return None
    measured = load.measured_watts or 0.0
    # Lowering a limit releases power only once the draw has come down; until then the load
    # still counts at what it draws (worst_case_watts), which the next snapshot will show.
    after = watts if watts < before else max(watts, measured)
    return Step(load.device_id, load.circuit, Action.SET_LIMIT, watts, before, after, reason)
