"""What the site knows of the hours ahead: announced budget events and published prices.

A policy that plans ahead (``lookahead``) asks for a forecast by its ``forecast_seconds``; the
control loop and the back-test attach one to the snapshot, step by step from ``snapshot.at``.
Only what is really known goes in: the site limit with every *announced* event (a 4CP window
called by the site's peak forecast, a demand-response call with its notice), and the power price
where a market has published it (the day-ahead price). Where a step has no published price the
policy assumes the price now holds (persistence); a budget with no event announced is the
site's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .budget import BudgetSchedule


@dataclass(frozen=True, slots=True)
class ForecastStep:
    offset_seconds: float  # from the snapshot's time to this step's start
    seconds: float
    budget_watts: float  # the site limit in force over the step, reserve taken off (as the snapshot's)
    power_usd_per_mwh: float | None = None  # published (day-ahead); None: unknown, persistence


def budget_outlook(
    schedule: BudgetSchedule, now: datetime, *, seconds: float, step_seconds: float, less_watts: float = 0.0,
    price_at: Callable[[datetime], float | None] | None = None,
) -> tuple[ForecastStep, ...]:
    """The schedule's budget over the next ``seconds``, in steps: the lowest budget in force at
    any instant of each step or of the schedule's lead after it (the loop plans against that:
    an event is met before it begins), less ``less_watts`` (the reserve and what the devices
    cannot see); and each step's published price at its start, where ``price_at`` (a tariff's,
    a day-ahead market's) knows one."""
    events = schedule.events()
    steps = []
    offset = 0.0
    while offset < seconds:
        begin = now + timedelta(seconds=offset)
        end = begin + timedelta(seconds=step_seconds) + schedule.lead
        instants = {begin} | {t for e in events for t in (e.start, e.end) if t is not None and begin < t < end}
        low = min(schedule.at(t) for t in instants)
        price = price_at(begin) if price_at is not None and offset > 0 else None
        steps.append(ForecastStep(offset, step_seconds, max(0.0, low - less_watts), price))
        offset += step_seconds
    return tuple(steps)
