"""The Policy contract, the registry of built-in policies, and how third-party policies load.

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

Where a name comes from (:func:`policy_factory`), in this order:

1. a built-in (``merit-order``, ``strike-price``, ``ai-first``);
2. a dotted path ``package.module:factory``, only for a module the site file allows
   (``policy_modules``): a policy file is data, and naming ``subprocess:Popen`` in it must not
   make even ``wattshift validate`` run code, so nothing outside the list is imported;
3. an installed distribution's entry point in the group ``wattshift.policies`` (installing a
   distribution into the daemon's environment is the administrator's act of trust).

A factory is a callable ``factory(options: Mapping[str, Any]) -> Policy``, or a class with a
``from_options`` classmethod of that shape. See ``docs/policies.md`` for a complete example.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from wattshift.daemon.model import SiteSnapshot
from wattshift.drivers.base import Registry

ENTRY_POINT_GROUP = "wattshift.policies"
# ``package.module:factory``: dotted identifiers, then one attribute (``Class`` or ``function``).
# One attribute only, so a name cannot walk from an allowed module into a module it imported
# (``allowed:os.system``).
MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_DOTTED = re.compile(rf"({MODULE_NAME}):([A-Za-z_][A-Za-z0-9_]*)")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one device should be: ``watts`` 0 means off (asleep).

    For a miner, ``watts`` is its power target. For a GPU node it is the wall draw of the whole
    node (host plus every card at the cap), and 0 means its job suspended or stopped.
    """

    device_id: str
    watts: float
    reason: str
    value_usd_per_mwh: float | None = None  # the marginal value that earned the last watt


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

    name: str

    def decide(self, snapshot: SiteSnapshot) -> Allocation: ...


PolicyFactory = Callable[[Mapping[str, Any]], Policy]


class PolicyLoadError(ValueError):
    """A policy name, path or entry point could not give a policy; the message says why."""


def module_name(value: str) -> str:
    """``value`` if it is a module name (``acme_policies``, ``acme.policies``), for the site
    file's ``policy_modules``; else ValueError."""
    if re.fullmatch(MODULE_NAME, value) is None:
        raise ValueError("not a Python module name (like acme_policies or acme.policies)")
    return value


def builtin_policies() -> Registry[PolicyFactory]:
    """The policies wattshift ships, by the names operators write in their files."""
    from .ai_first import AiFirstPolicy
    from .merit_order import MeritOrderPolicy
    from .strike_price import StrikePricePolicy

    registry: Registry[PolicyFactory] = Registry("policy")
    registry.register(MeritOrderPolicy.name)(MeritOrderPolicy.from_options)
    registry.register(StrikePricePolicy.name)(StrikePricePolicy.from_options)
    registry.register(AiFirstPolicy.name)(AiFirstPolicy.from_options)
    return registry


def installed_policies() -> dict[str, metadata.EntryPoint]:
    """Policies other distributions declare in the ``wattshift.policies`` entry-point group."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_policy_names() -> list[str]:
    return sorted({*builtin_policies().names(), *installed_policies()})


def policy_factory(ref: str, modules: Collection[str] = ()) -> PolicyFactory:
    """The factory for a built-in name, an entry-point name, or ``package.module:factory`` with
    the module in ``modules`` (the site file's ``policy_modules``); anything else is refused
    before any import."""
    builtins = builtin_policies()
    if ref in builtins.names():
        return builtins.get(ref)
    if ":" in ref:
        return _as_factory(_import_dotted(ref, modules), ref)
    entry = installed_policies().get(ref)
    if entry is None:
        raise PolicyLoadError(
            f"unknown policy {ref!r} (known: {', '.join(known_policy_names())}; "
            f"or give a dotted path package.module:factory)"
        )
    try:
        loaded = entry.load()
    except Exception as err:  # an installed plug-in that is broken: say which and why
        raise PolicyLoadError(
            f"policy {ref!r} (entry point {entry.value} in group {ENTRY_POINT_GROUP}) failed to "
            f"load: {type(err).__name__}: {err}"
        ) from None
    return _as_factory(loaded, f"{ref} ({entry.value})")


def build_policy(ref: str, options: Mapping[str, Any], modules: Collection[str] = ()) -> Policy:
    """The bare policy (pure; a stateful one still wants its state passed in).

    A bad option raises ValueError from the factory, by convention ``"option NAME: reason"``;
    anything else that goes wrong raises :class:`PolicyLoadError`.
    """
    return policy_from(policy_factory(ref, modules), ref, options)


def policy_from(factory: PolicyFactory, ref: str, options: Mapping[str, Any]) -> Policy:
    """Build with a factory :func:`policy_factory` gave for ``ref``; errors as :func:`build_policy`."""
    try:
        policy = factory(options)
    except ValueError:
        raise
    except Exception as err:
        raise PolicyLoadError(f"policy {ref!r}: factory failed: {type(err).__name__}: {err}") from None
    if not _looks_like_policy(policy):
        raise PolicyLoadError(
            f"policy {ref!r}: factory returned {type(policy).__name__}, not a Policy "
            "(needs a str attribute 'name' and a method 'decide(snapshot)')"
        )
    return policy


def make_policy(name: str, options: Mapping[str, Any], modules: Collection[str] = ()) -> Policy:
    """A policy ready for the live loop: built by name, its state carried if it has any.

    An unknown name, a module not in ``modules``, a broken plug-in or a bad option raises
    ValueError.
    """
    try:
        return carried(build_policy(name, options, modules))
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None


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


def bare(policy: Policy) -> Policy:
    """The pure policy inside a :class:`Carried`, or the policy itself."""
    return policy.policy if isinstance(policy, Carried) else policy


def _looks_like_policy(obj: object) -> bool:
    return isinstance(getattr(obj, "name", None), str) and callable(getattr(obj, "decide", None))


def _as_factory(obj: object, ref: str) -> PolicyFactory:
    from_options = getattr(obj, "from_options", None)
    if isinstance(obj, type) and callable(from_options):
        return from_options  # type: ignore[no-any-return]
    if callable(obj):
        return obj  # type: ignore[return-value]
    raise PolicyLoadError(f"policy {ref!r}: {type(obj).__name__} is neither a factory nor a class")


def _import_dotted(ref: str, modules: Collection[str]) -> object:
    match = _DOTTED.fullmatch(ref)
    if match is None:
        raise PolicyLoadError(f"policy {ref!r}: expected package.module:factory (one attribute, no dots)")
    module_name, attribute = match.groups()
    if module_name not in modules:
        allowed = ", ".join(sorted(modules)) or "none"
        raise PolicyLoadError(
            f"policy {ref!r}: module {module_name!r} is not allowed (policy_modules in the site file: "
            f"{allowed}); list it there, or install the policy as an entry point in the group "
            f"{ENTRY_POINT_GROUP}. Nothing was imported"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raised while importing
        raise PolicyLoadError(
            f"policy {ref!r}: cannot import {module_name!r}: {type(err).__name__}: {err}"
        ) from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PolicyLoadError(f"policy {ref!r}: module {module_name!r} has no {attribute!r}") from None
