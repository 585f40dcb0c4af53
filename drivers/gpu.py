"""The GPU driver contract: what the loop needs from a host's GPUs, in watts and UUIDs.

A GPU is keyed by its UUID (indices change when a card is lost or the host reboots). One
driver instance owns one management library (NVML) and every GPU it was told to manage; the
NVML implementation lives in :mod:`wattshift.drivers.nvml_gpu`, the simulated library under it
in :mod:`wattshift.simulators.nvml_lib`.

Errors surface as :class:`~wattshift.drivers.base.DeviceError` with a
:class:`~wattshift.drivers.base.Failure` kind, as for miners; a lost GPU is reported as
``Failure.NO_ANSWER`` and the loop counts it at its maximum until it is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .base import DeviceError, Registry


@dataclass(frozen=True, slots=True)
class GpuLimits:
    """What the card lets us set (``nvmlDeviceGetPowerManagementLimitConstraints``)."""

    min_watts: float
    max_watts: float
    default_watts: float


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One poll of one GPU. ``None`` means the card did not say (or cannot)."""

    uuid: str
    index: int
    model: str | None
    watts: float | None
    limit_watts: float | None  # the management limit we set
    enforced_limit_watts: float | None  # what the card enforces (may be lower: thermal, system)
    limits: GpuLimits | None
    energy_joules: float | None  # counter since the driver loaded: use deltas
    utilisation_pct: float | None
    temperature_c: float | None
    processes: tuple[int, ...] = ()  # PIDs of compute processes
    # Set once a permission error was seen: the cap cannot be changed on this card, so it is
    # driven through its jobs only (DESIGN.md, NVML errors by class).
    cap_settable: bool = True


@runtime_checkable
class GpuDriver(Protocol):
    """Every GPU of one host. Calls run off the event loop, each with its own deadline."""

    async def start(self) -> list[str]:
        """Initialise the library and find the managed GPUs; returns their UUIDs."""
        ...

    async def read_all(self) -> Mapping[str, GpuReading | DeviceError]: ...

    async def set_power_limit(self, uuid: str, watts: float) -> float:
        """Set the card's limit, read it back, return the enforced watts (DeviceError if not held)."""
        ...

    async def close(self) -> None: ...


GpuDriverFactory = Callable[..., GpuDriver]


def gpu_drivers() -> Registry[GpuDriverFactory]:
    """GPU driver kinds by the name the site file uses (``driver: nvml``)."""
    registry: Registry[GpuDriverFactory] = Registry("GPU driver")
    from .nvml_gpu import NvmlGpus  # noqa: PLC0415 - the binding is imported only when used

    registry.register("nvml")(NvmlGpus)
    return registry
