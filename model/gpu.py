"""A GPU card as the domain knows it: its power-limit range and what it reports."""

from __future__ import annotations

from dataclasses import dataclass


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
