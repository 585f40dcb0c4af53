"""Where a policy comes from, by the name a policy file gives, and how it is built.

In this order (:func:`policy_factory`):

1. a built-in (``merit-order``, ``lookahead``, ``strike-price``, ``ai-first``);
2. a dotted path ``package.module:factory``, only for a module the site file allows
   (``policy_modules``): a policy file is data, and naming ``subprocess:Popen`` in it must not
   make even ``wattshift validate`` run code, so nothing outside the list is imported;
3. an installed distribution's entry point in the group ``wattshift.policies`` (installing a
   distribution into the daemon's environment is the administrator's act of trust).

A factory is a callable ``factory(options: Mapping[str, Any]) -> Policy``, or a class with a
``from_options`` classmethod of that shape. See ``docs/policies.md`` for a complete example.
The contract itself is in :mod:`wattshift.policies.base`; this module imports the built-ins,
which import the contract, never the other way round.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection, Mapping
from importlib import metadata
from typing import Any

from wattshift.model.registry import Registry
from wattshift.policies.base import Policy, PolicyFactory, PolicyLoadError, carried

ENTRY_POINT_GROUP = "wattshift.policies"


# ``package.module:factory``: dotted identifiers, then one attribute (``Class`` or ``function``).
# One attribute only, so a name cannot walk from an allowed module into a module it imported
# (``allowed:os.system``).
MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"


_DOTTED = re.compile(rf"({MODULE_NAME}):([A-Za-z_][A-Za-z0-9_]*)")


def module_name(value: str) -> str:
    """``value`` if it is a module name (``acme_policies``, ``acme.policies``), for the site
    file's ``policy_modules``; else ValueError."""
    if re.fullmatch(MODULE_NAME, value) is None:
        raise ValueError("not a Python module name (like acme_policies or acme.policies)")
    return value


def builtin_policies() -> Registry[PolicyFactory]:
    """The policies wattshift ships, by the names operators write in their files."""
    from .ai_first import AiFirstPolicy
    from .lookahead import LookaheadPolicy
    from .merit_order import MeritOrderPolicy
    from .strike_price import StrikePricePolicy

    registry: Registry[PolicyFactory] = Registry("policy")
    registry.register(MeritOrderPolicy.name)(MeritOrderPolicy.from_options)
    registry.register(LookaheadPolicy.name)(LookaheadPolicy.from_options)
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


def _looks_like_policy(obj: object) -> bool:
    return isinstance(getattr(obj, "name", None), str) and callable(getattr(obj, "decide", None))


def _as_factory(obj: object, ref: str) -> PolicyFactory:
    from_options = getattr(obj, "from_options", None)
    if isinstance(obj, type) and callable(from_options):
        return from_options  # type: ignore[no-any-return]
    if callable(obj):
        return obj
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
