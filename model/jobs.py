"""AI work as the domain knows it: how flexible a job is, where it stands, what a switch costs."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FlexTier(enum.StrEnum):
    """How far a job may be moved to free power. Firm load is never touched."""

    FIRM = "firm"  # rented on an on-demand contract, or promised: never curtailed by us
    SUSPENDABLE = "suspendable"  # may be paused (SIGSTOP / scontrol suspend) and resumed
    PREEMPTIBLE = "preemptible"  # may be stopped and requeued (checkpoint, then restart later)


class JobState(enum.StrEnum):
    PENDING = "pending"  # queued, not running (also: requeued, waiting)
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class SwitchingCost:
    """What moving a job costs, beyond the power it stops using."""

    checkpoint_seconds: float = 0.0  # time to save state before it can be stopped
    restart_seconds: float = 0.0  # time from start/resume until it does useful work again
    penalty_usd: float = 0.0  # contract penalty or lost work per interruption


NO_SWITCHING_COST = SwitchingCost()
