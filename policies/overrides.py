"""Maintenance overrides: an operator holds a device, or a whole class, on or off.

:class:`Overrides` is the state (set from MQTT commands); :class:`OverridePolicy` wraps any
policy and bends its allocation: a forced-off device gets target 0, a forced-on device at least
its lowest running level. Nothing else changes, and nothing here bypasses a limit: the
sequencer still grants a forced-on device only into headroom that is real, so "on" means
"on as soon as it fits". Forced targets come first in the allocation, so the sequencer serves
them before the policy's own grants.

Pure: the time is the snapshot's (``snapshot.at``); an override past its ``until`` is ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from wattshift.model.miner import PowerControl
from wattshift.model.snapshot import DeviceClass, GpuNodeState, Load, SiteSnapshot

from .base import Allocation, Policy, Target


class Forced(enum.StrEnum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Override:
    state: Forced
    until: datetime | None = None  # None: until set back to auto
    by: str = "operator"

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


class OverrideListener(Protocol):
    """Told of every change before it is made (wattshift.daemon.runtime.site_state persists them);
    ``scope`` is "device" or "class", ``override`` None means back to auto. A listener that
    raises stops the change."""

    def override_saved(self, scope: str, target: str, override: Override | None) -> None: ...


class Overrides:
    """Forced states by device id and by device class; a device's own override beats its
    class's."""

    def __init__(self) -> None:
        self.devices: dict[str, Override] = {}
        self.classes: dict[DeviceClass, Override] = {}
        self.listener: OverrideListener | None = None

    def set_device(self, device_id: str, override: Override | None) -> None:
        if self.listener is not None:
            self.listener.override_saved("device", device_id, override)
        if override is None:
            self.devices.pop(device_id, None)
        else:
            self.devices[device_id] = override

    def set_class(self, device_class: DeviceClass, override: Override | None) -> None:
        if self.listener is not None:
            self.listener.override_saved("class", device_class.value, override)
        if override is None:
            self.classes.pop(device_class, None)
        else:
            self.classes[device_class] = override

    def for_device(self, device_id: str, device_class: DeviceClass, now: datetime) -> Override | None:
        for override in (self.devices.get(device_id), self.classes.get(device_class)):
            if override is not None and override.active(now):
                return override
        return None

    def expire(self, now: datetime) -> None:
        self.devices = {d: o for d, o in self.devices.items() if o.active(now)}
        self.classes = {c: o for c, o in self.classes.items() if o.active(now)}

    def __bool__(self) -> bool:
        return bool(self.devices or self.classes)


class OverridePolicy:
    """``inner``'s allocation with the overrides applied. ``inner`` may be swapped (policy
    reload) without losing the overrides."""

    def __init__(self, inner: Policy, overrides: Overrides) -> None:
        self.inner = inner
        self.overrides = overrides

    @property
    def name(self) -> str:
        return self.inner.name

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        allocation = self.inner.decide(snapshot)
        if not self.overrides:
            return allocation
        forced: list[Target] = []
        rest: list[Target] = []
        for target in allocation:
            load = snapshot.load(target.device_id)
            override = self.overrides.for_device(target.device_id, load.kind, snapshot.at)
            if override is None:
                rest.append(target)
            elif override.state is Forced.OFF:
                forced.append(Target(target.device_id, 0.0, f"forced off by {override.by}{_until(override)}"))
            else:
                watts = target.watts if target.watts > 0 else lowest_running_watts(load)
                forced.append(Target(target.device_id, watts, f"forced on by {override.by}{_until(override)}",
                                     target.value_usd_per_mwh))
        if not forced:
            return allocation
        summary = f"{allocation.summary}; {len(forced)} forced by operator".lstrip("; ")
        return Allocation(tuple(forced + rest), summary)


class InnerPolicy:
    """A controller seen through its :class:`OverridePolicy`: ``policy`` reads and replaces
    the wrapped policy, so a policy reload (``wattshift.daemon.runtime.policy_reload.PolicyReloader``)
    swaps what decides without dropping the operator's overrides."""

    def __init__(self, controller: Any) -> None:
        if not isinstance(controller.policy, OverridePolicy):
            raise TypeError("the controller's policy is not wrapped in an OverridePolicy")
        self._controller = controller

    @property
    def policy(self) -> Policy:
        inner: Policy = self._controller.policy.inner
        return inner

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._controller.policy.inner = policy

    @property
    def recorder(self) -> Any:
        return self._controller.recorder

    def request_replan(self, reason: str) -> None:
        self._controller.request_replan(reason)


def lowest_running_watts(load: Load) -> float:
    if isinstance(load, GpuNodeState):
        return load.watts_at_cap(load.cap_min_watts)
    capability = load.capability
    if capability.control is PowerControl.ON_OFF:
        return capability.max_watts
    if capability.control is PowerControl.PROFILES and capability.profiles_watts:
        return capability.profiles_watts[0]
    return capability.min_watts


def _until(override: Override) -> str:
    return f" until {override.until.isoformat()}" if override.until else ""


def forced_devices(overrides: Overrides, classes: Mapping[str, DeviceClass], now: datetime) -> dict[str, str]:
    """Device id -> forced state now, for state publishing."""
    out: dict[str, str] = {}
    for device_id, device_class in classes.items():
        override = overrides.for_device(device_id, device_class, now)
        if override is not None:
            out[device_id] = override.state.value
    return out
