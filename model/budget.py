"""The site budget over time: the contract limit, lowered by curtailment events.

A grid event usually comes with notice (ERCOT ERS: 10 or 30 minutes). The controller plans
against the lowest budget in force anywhere in the next ``lead_seconds``, so miners are shed
*before* the event starts, not after.

Overlapping events resolve by priority, then by the lowest limit: at any instant only the
events of the highest priority in force count, and of those the lowest limit wins. With every
event at the default priority 0 that is simply the lowest limit. A higher priority lets an
operator's event override a standing one (a maintenance window relaxing a scheduled cut), but
never above the contract.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    name: str
    limit_watts: float
    start: datetime
    end: datetime | None = None  # None: until cancelled
    priority: int = 0  # overlapping events: the highest priority in force decides

    def overlaps(self, begin: datetime, finish: datetime) -> bool:
        return self.start <= finish and (self.end is None or self.end > begin)


class BudgetListener(Protocol):
    """Told of every change before it is made (wattshift.daemon.runtime.site_state persists them); a
    listener that raises stops the change."""

    def event_saved(self, event: BudgetEvent) -> None: ...

    def events_removed(self, names: list[str]) -> None: ...


class BudgetSchedule:
    def __init__(self, contract_watts: float, *, lead_seconds: float = 60.0) -> None:
        if contract_watts <= 0:
            raise ValueError(f"contract budget {contract_watts} W must be positive")
        self.contract_watts = contract_watts
        self.lead = timedelta(seconds=lead_seconds)
        self._events: dict[str, BudgetEvent] = {}
        self.listener: BudgetListener | None = None

    def add(self, event: BudgetEvent) -> None:
        if event.limit_watts < 0:
            raise ValueError(f"event {event.name!r}: limit {event.limit_watts} W must be >= 0")
        if event.end is not None and event.end <= event.start:
            raise ValueError(f"event {event.name!r}: ends before it starts")
        if self.listener is not None:
            self.listener.event_saved(event)
        self._events[event.name] = event

    def cancel(self, name: str) -> bool:
        if name not in self._events:
            return False
        if self.listener is not None:
            self.listener.events_removed([name])
        del self._events[name]
        return True

    def events(self) -> list[BudgetEvent]:
        return sorted(self._events.values(), key=lambda e: e.start)

    def in_force(self, now: datetime) -> float:
        """The budget to plan against now: the lowest budget at any instant from now to
        now + lead. The budget is a step function that changes only where an event starts or
        ends, so those instants (and now) are the only ones to look at."""
        horizon = now + self.lead
        upcoming = [e for e in self._events.values() if e.overlaps(now, horizon)]
        instants = {now}
        for event in upcoming:
            instants.update(t for t in (event.start, event.end) if t is not None and now < t <= horizon)
        return min(self._budget_at(t, upcoming) for t in instants)

    def at(self, now: datetime) -> float:
        """The budget actually in force at this instant (what compliance is judged against)."""
        return self._budget_at(now, self._events.values())

    def _budget_at(self, instant: datetime, events: Iterable[BudgetEvent]) -> float:
        active = [e for e in events if e.overlaps(instant, instant)]
        if not active:
            return self.contract_watts
        top = max(e.priority for e in active)
        return min([self.contract_watts, *(e.limit_watts for e in active if e.priority == top)])

    def limits_at(self, circuit_limits: Mapping[str, float], now: datetime) -> dict[str, float]:
        """Every circuit's limit at this instant, the site's being the budget in force."""
        return {**circuit_limits, "site": self.at(now)}

    def expire(self, now: datetime) -> list[BudgetEvent]:
        gone = [e for e in self._events.values() if e.end is not None and e.end <= now]
        for event in gone:
            del self._events[event.name]
        if gone and self.listener is not None:
            try:
                self.listener.events_removed([e.name for e in gone])
            except Exception:  # an ended event left on disk is dropped when read back; the tick goes on
                log.exception("budget events %s ended but could not be removed from the state file",
                              [e.name for e in gone])
        return gone
