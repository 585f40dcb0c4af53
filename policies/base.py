"""The Policy contract and the registry of built-in policies.

A policy is pure: ``decide(snapshot) -> Allocation`` reads the snapshot and nothing else. No I/O,
no clock reads (the time is ``snapshot.at`` / ``snapshot.clock``), no globals, no state kept
between calls that the snapshot does not carry. The same code then runs live, in ``plan``, in
shadow mode and in back-tests, and a test of a policy is a table of snapshots and answers.

A policy says *where* power should go. It does not decide *how* to get there safely: the
sequencer owns the order of commands and every limit during the transition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from wattshift.daemon.model import SiteSnapshot
from wattshift.drivers.base import Registry


@dataclass(frozen=True, slots=True)
class Target:
    """Where one device should be: ``watts`` 0 means off (asleep)."""

    device_id: str
    watts: float
    reason: str
    value_usd_per_mwh: float | None = None  # the marginal value that earned the last watt


@dataclass(frozen=True)
class Allocation:
    """Targets in merit order (best first): the sequencer grants in this order."""

    targets: tuple[Target, ...]
    summary: str = ""
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


class Policy(Protocol):
    name: str

    def decide(self, snapshot: SiteSnapshot) -> Allocation: ...


PolicyFactory = Callable[[Mapping[str, Any]], Policy]


def builtin_policies() -> Registry[PolicyFactory]:
    """The policies wattshift ships, by the names operators write in their files."""
    from .merit_order import MeritOrderPolicy

    registry: Registry[PolicyFactory] = Registry("policy")
    registry.register(MeritOrderPolicy.name)(MeritOrderPolicy.from_options)
    return registry


def make_policy(name: str, options: Mapping[str, Any]) -> Policy:
    """Build a policy by name; an unknown name or a bad option raises ValueError."""
    try:
        factory = builtin_policies().get(name)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    return factory(options)
