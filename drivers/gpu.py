"""The GPU driver contract: what the loop needs from a host's GPUs, in watts and UUIDs.

A GPU is keyed by its UUID (indices change when a card is lost or the host reboots). One
driver instance owns one management library (NVML) and every GPU it was told to manage; the
NVML implementation lives in :mod:`wattshift.drivers.nvml_gpu`, the simulated library under it
in :mod:`wattshift.simulators.nvml_lib`.

Errors surface as :class:`~wattshift.drivers.base.DeviceError` with a
:class:`~wattshift.model.miner.Failure` kind, as for miners; a lost GPU is reported as
``Failure.NO_ANSWER`` and the loop counts it at its maximum until it is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from wattshift.model.gpu import GpuReading

from .base import DeviceError


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


