"""The miner driver interface and the error every driver raises.

Drivers own I/O and nothing else (DESIGN.md, section 2). They translate a vendor library into
the small vocabulary of wattshift.model; the control loop never sees a pyasic or NVML object.

Errors are mapped once, at the driver boundary, into :class:`DeviceError` with a
:class:`Failure` kind. A driver never signals failure with a bare ``False``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from wattshift.model.miner import Failure, MinerCapability, MinerReading


class DeviceError(Exception):
    """A device call failed; ``failure`` says how, ``detail`` says what to look at."""

    def __init__(self, device_id: str, failure: Failure, detail: str) -> None:
        super().__init__(f"{device_id}: {failure.value}: {detail}")
        self.device_id = device_id
        self.failure = failure
        self.detail = detail


@runtime_checkable
class MinerDriver(Protocol):
    """One miner. Every call has its own deadline and raises :class:`DeviceError` on failure."""

    @property
    def device_id(self) -> str: ...

    @property
    def capability(self) -> MinerCapability: ...

    async def read(self) -> MinerReading: ...

    async def set_power_limit(self, watts: float) -> float:
        """Apply the limit and confirm it by read-back; returns the watts the firmware holds."""
        ...

    async def sleep(self) -> None: ...

    async def wake(self) -> None: ...


