"""The Policy contract: what a policy is given, what it answers, and the memory it may carry.

A policy is pure: ``decide(snapshot) -> Allocation`` reads the snapshot and nothing else. No I/O,
no clock reads (the time is ``snapshot.at`` / ``snapshot.clock``), no globals, no state kept
between calls that the snapshot does not carry. The same code then runs live, in ``plan``, in
shadow mode and in back-tests, and a test of a policy is a table of snapshots and answers.

A policy says *where* power should go. It does not decide *how* to get there safely: the
sequencer owns the order of commands and every limit during the transition.

A policy that needs memory between ticks (debounce timers, for example) declares
``stateful = True`` and takes it explicitly: ``decide(snapshot, state)`` returns an allocation
whose ``state`` is the JSON-able mapping to hand back next time. That keeps ``decide`` a pure
function of its arguments (a back-test replays it exactly); :class:`Carried` is the one small
object that holds the state between live ticks, outside the policy.

Where a policy comes from, by the name a policy file gives: :mod:`wattshift.policies.catalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from wattshift.model.snapshot import SiteSnapshot

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True, init=False)
class Target:
    """Where one device should be: ``watts`` 0 means off (asleep).

    For a miner, ``watts`` is its power target. For a GPU node it is the wall draw of the whole
    node (host plus every card at the cap), and 0 means its job suspended or stopped.
    """

    device_id: str
    watts: float
    reason: str
    value_usd_per_mwh: float | None = None  # the marginal value that earned the last watt

    def __init__(self, device_id: str, watts: float, reason: str, value_usd_per_mwh: float | None = None) -> None:
        # Written out, not the dataclass's: a frozen one goes through object.__setattr__ per
        # field, twice the cost of filling each slot through its descriptor, and a decision
        # makes a Target per load. Still frozen: assignment raises FrozenInstanceError.
        _set_device_id(self, device_id)
        _set_watts(self, watts)
        _set_reason(self, reason)
        _set_value(self, value_usd_per_mwh)


_set_device_id, _set_watts, _set_reason, _set_value = (Target.__dict__[f.name].__set__ for f in fields(Target))


@dataclass(frozen=True)
class Allocation:
    """Targets in merit order (best first): the sequencer grants in this order.

    ``state`` is for stateful policies only: what to pass back as ``state`` on the next call.
    It must survive ``json.dumps`` (strings, numbers, booleans, lists, mappings).
    """

    targets: tuple[Target, ...]
    summary: str = ""
    state: Mapping[str, Any] = field(default_factory=dict)
    _by_id: Mapping[str, Target] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", MappingProxyType({t.device_id: t for t in self.targets}))

    def __getitem__(self, device_id: str) -> Target:
        return self._by_id[device_id]

    def get(self, device_id: str) -> Target | None:
        return self._by_id.get(device_id)

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def planned_watts(self) -> float:
        return sum(t.watts for t in self.targets)


@runtime_checkable
class Policy(Protocol):
    """What the control loop needs from a policy.

    ``name``: short, stable, shown in the journal and in ``wattshift plan``.

    ``decide(snapshot)``: one :class:`Target` per device in ``snapshot.loads`` (miners and GPU
    nodes), best first. Rules a policy must keep:

    - pure: read only the snapshot (``snapshot.at`` is the time); raise nothing for any
      snapshot the daemon can build (a device that did not answer has ``controllable`` False:
      give it a target of its ``worst_case_watts`` and a reason);
    - fit the limits: the sum of targets on every circuit (``snapshot.effective_limits()``,
      nested by ``snapshot.circuit_parents``) within its limit; the sequencer refuses what does
      not fit, but a policy that overshoots wastes a tick;
    - say why: ``reason`` is what an operator reads (``S21 10.0.0.7 -> 2800 W: ...``).
    """

    @property
    def name(self) -> str: ...  # read-only: a plain attribute or a property both satisfy it

    def decide(self, snapshot: SiteSnapshot) -> Allocation: ...


PolicyFactory = Callable[[Mapping[str, Any]], Policy]


class PolicyLoadError(ValueError):
    """A policy name, path or entry point could not give a policy; the message says why."""


def parse_options(model: type[M], options: Mapping[str, Any], policy: str) -> M:
    """Validate ``options`` as ``model``; bad ones raise ``ValueError("<policy> option <key>: why")``,
    one line per bad option."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as err:
        raise ValueError("\n".join(
            f"{policy} option {'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors(include_url=False))) from None


def is_stateful(policy: object) -> bool:
    return bool(getattr(policy, "stateful", False))


class Carried:
    """Holds a stateful policy's state between live ticks; the policy itself stays pure.

    Deciding twice on the same snapshot is harmless for the built-ins (their state moves with
    ``snapshot.at``, not with the number of calls), which matters because the loop decides
    again after confirming sheds, and shadow mode decides beside it.
    """

    stateful = False  # to the loop it is a plain policy

    def __init__(self, policy: Policy, state: Mapping[str, Any] | None = None) -> None:
        self.policy = policy
        self.state: Mapping[str, Any] | None = state

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def forecast_seconds(self) -> float:
        return forecast_seconds(self.policy)

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        allocation = self.policy.decide(snapshot, self.state)  # type: ignore[call-arg]
        self.state = allocation.state
        return allocation

    def adopt(self, previous: Policy) -> None:
        """Keep the memory of the policy this one replaces, if it is the same kind."""
        if isinstance(previous, Carried) and previous.name == self.name:
            self.state = previous.state


def carried(policy: Policy) -> Policy:
    return Carried(policy) if is_stateful(policy) else policy


def forecast_seconds(policy: object) -> float:
    """How far ahead the snapshot's forecast must reach for ``policy`` (0: it reads none). A
    policy that plans says so by a ``forecast_seconds`` attribute; the wrappers pass theirs on."""
    wanted = getattr(policy, "forecast_seconds", 0.0)
    return max(0.0, float(wanted)) if isinstance(wanted, int | float) and not isinstance(wanted, bool) else 0.0


def bare(policy: Policy) -> Policy:
    """The pure policy inside a :class:`Carried`, or the policy itself."""
    return policy.policy if isinstance(policy, Carried) else policy


