"""What one tick (or one fast shed) did: the snapshot it decided on, the plans, the results."""

from __future__ import annotations

from dataclasses import dataclass, field

from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Allocation

from .actuator import StepResult
from .sequencer import Plan


@dataclass(frozen=True)
class TickReport:
    snapshot: SiteSnapshot
    allocation: Allocation
    plans: tuple[Plan, ...]
    results: tuple[StepResult, ...]
    seconds: float
    dry_run: bool
    notes: tuple[str, ...] = field(default=())

    @property
    def failures(self) -> list[StepResult]:
        return [r for r in self.results if not r.ok]
