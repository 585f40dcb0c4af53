"""The site budget over time: the contract limit, lowered by curtailment events.

A grid event usually comes with notice (ERCOT ERS: 10 or 30 minutes). The controller plans
against the lowest budget in force anywhere in the next ``lead_seconds``, so miners are shed
*before* the event starts, not after. Overlapping events resolve to the lowest limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    name: str
    limit_watts: float
    start: datetime
    end: datetime | None = None  # None: until cancelled

    def overlaps(self, begin: datetime, finish: datetime) -> bool:
        return self.start <= finish and (self.end is None or self.end > begin)


class BudgetSchedule:
    def __init__(self, contract_watts: float, *, lead_seconds: float = 60.0) -> None:
        if contract_watts <= 0:
            raise ValueError(f"contract budget {contract_watts} W must be positive")
        self.contract_watts = contract_watts
        self.lead = timedelta(seconds=lead_seconds)
        self._events: dict[str, BudgetEvent] = {}

    def add(self, event: BudgetEvent) -> None:
        if event.limit_watts < 0:
            raise ValueError(f"event {event.name!r}: limit {event.limit_watts} W must be >= 0")
        if event.end is not None and event.end <= event.start:
            raise ValueError(f"event {event.name!r}: ends before it starts")
        self._events[event.name] = event

    def cancel(self, name: str) -> bool:
        return self._events.pop(name, None) is not None

    def events(self) -> list[BudgetEvent]:
        return sorted(self._events.values(), key=lambda e: e.start)

    def in_force(self, now: datetime) -> float:
        """The budget to plan against now: the lowest limit from now to now + lead."""
        horizon = now + self.lead
        limits = [e.limit_watts for e in self._events.values() if e.overlaps(now, horizon)]
        return min([self.contract_watts, *limits])

    def at(self, now: datetime) -> float:
        """The budget actually in force at this instant (what compliance is judged against)."""
        limits = [e.limit_watts for e in self._events.values() if e.overlaps(now, now)]
        return min([self.contract_watts, *limits])

    def limits_at(self, circuit_limits: Mapping[str, float], now: datetime) -> dict[str, float]:
        """Every circuit's limit at this instant, the site's being the budget in force."""
        return {**circuit_limits, "site": self.at(now)}

    def expire(self, now: datetime) -> list[BudgetEvent]:
        gone = [e for e in self._events.values() if e.end is not None and e.end <= now]
        for event in gone:
            del self._events[event.name]
        return gone
