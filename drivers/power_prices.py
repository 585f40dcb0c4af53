"""The price of power ($/MWh): a time-of-use schedule, or a real-time price over HTTP.

A tariff is a table of periods (weekdays, hours, a price) in the utility's time zone. The table
is checked once, when it is built: every minute of the week must belong to exactly one period,
and each gap or overlap is named. Looking a price up is pure; only the feed reads the clock.

A real-time source is any URL that answers JSON (a dotted path to the price) or CSV (a column;
the last row is the newest), in $/MWh, $/kWh or cents/kWh. It is converted to $/MWh here, once.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import httpx

from .price_http import DEFAULT_TIMEOUT_S, http_get, json_body, number, pick
from .prices import Clock, PriceError, PriceQuote

Wall = Callable[[], datetime]
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60

PowerUnit = Literal["usd_per_mwh", "usd_per_kwh", "cents_per_kwh"]
TO_USD_PER_MWH: dict[str, float] = {"usd_per_mwh": 1.0, "usd_per_kwh": 1000.0, "cents_per_kwh": 10.0}


def parse_days(entries: Iterable[str]) -> frozenset[int]:
    """``["mon-fri"]``, ``["sat", "sun"]`` or ``["daily"]`` as weekday numbers (Monday 0)."""
    days: set[int] = set()
    for entry in entries:
        text = entry.strip().lower()
        if text in ("daily", "all"):
            days.update(range(7))
            continue
        first, _, last = text.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"day {entry!r}: expected mon..sun, a range such as mon-fri, or daily")
        start, end = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.update((start + k) % 7 for k in range((end - start) % 7 + 1))  # fri-mon wraps the weekend
    return frozenset(days)


def parse_clock(text: str, *, end: bool = False) -> int:
    """``HH:MM`` as minutes after midnight; ``24:00`` only as the end of a period."""
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"time {text!r}: expected HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or value > MINUTES_PER_DAY or (value == MINUTES_PER_DAY and not end):
        raise ValueError(f"time {text!r}: expected 00:00 to 23:59{' (or 24:00)' if end else ''}")
    return value


@dataclass(frozen=True, slots=True)
class TouPeriod:
    """``start``..``end`` on each of ``days``; an end at or before the start runs past midnight
    (22:00-06:00 on Mon-Fri covers Monday night into Tuesday morning, and so on)."""

    name: str
    days: frozenset[int]
    start_minute: int
    end_minute: int
    usd_per_mwh: float

    def minutes_of_week(self) -> Iterable[int]:
        wraps = self.end_minute <= self.start_minute
        for day in self.days:
            base = day * MINUTES_PER_DAY
            yield from range(base + self.start_minute, base + (MINUTES_PER_DAY if wraps else self.end_minute))
            if wraps:
                after = ((day + 1) % 7) * MINUTES_PER_DAY
                yield from range(after, after + self.end_minute)


class TouSchedule:
    """A week of minutes, each owned by exactly one period; raises ValueError naming every gap
    and overlap otherwise."""

    def __init__(self, periods: list[TouPeriod]) -> None:
        if not periods:
            raise ValueError("a time-of-use schedule needs at least one period")
        owner: list[int | None] = [None] * (7 * MINUTES_PER_DAY)
        clashes: dict[tuple[int, int], list[int]] = {}
        for index, period in enumerate(periods):
            for minute in period.minutes_of_week():
                other = owner[minute]
                if other is not None:
                    clashes.setdefault((other, index), []).append(minute)
                else:
                    owner[minute] = index
        problems = [f"periods[{a}] {periods[a].name!r} and periods[{b}] {periods[b].name!r} overlap on "
                    f"{_spans(minutes)}" for (a, b), minutes in clashes.items()]
        gaps = [m for m, o in enumerate(owner) if o is None]
        if gaps:
            problems.append(f"no period covers {_spans(gaps)}")
        if problems:
            raise ValueError("; ".join(problems))
        self.periods = tuple(periods)
        self._owner = [o for o in owner if o is not None]

    def period_at(self, local: datetime) -> TouPeriod:
        """The period in force at ``local``, a time already in the tariff's time zone."""
        return self.periods[self._owner[local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute]]


def _spans(minutes: list[int], limit: int = 4) -> str:
    """Sorted minutes of the week as ``Mon 14:00-15:00, Sat 00:00-24:00`` (split at midnight)."""
    spans: list[tuple[int, int]] = []
    for minute in sorted(minutes):
        if spans and spans[-1][1] == minute and minute % MINUTES_PER_DAY:
            spans[-1] = (spans[-1][0], minute + 1)
        else:
            spans.append((minute, minute + 1))
    text = [f"{DAY_NAMES[a // MINUTES_PER_DAY].title()} {_hhmm(a % MINUTES_PER_DAY)}-"
            f"{_hhmm(b - (a // MINUTES_PER_DAY) * MINUTES_PER_DAY)}" for a, b in spans[:limit]]
    more = f" and {len(spans) - limit} more" if len(spans) > limit else ""
    return ", ".join(text) + more


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class TimeOfUsePrice:
    """The tariff's price now, in the tariff's own time zone (DST included)."""

    def __init__(
        self,
        schedule: TouSchedule,
        timezone: str,
        *,
        clock: Clock = time.monotonic,
        wall: Wall = lambda: datetime.now(UTC),
        name: str = "time-of-use",
    ) -> None:
        self.name = name
        self.schedule = schedule
        self.zone = ZoneInfo(timezone)
        self._clock = clock
        self._wall = wall

    def period_now(self) -> TouPeriod:
        return self.schedule.period_at(self._wall().astimezone(self.zone))

    async def latest(self) -> PriceQuote:
        period = self.period_now()
        return PriceQuote(period.usd_per_mwh, self._clock(), f"{self.name}:{period.name}")

    def published_at(self, at: datetime) -> float | None:
        """A tariff is published: its price at any instant ahead (a planning policy's forecast)."""
        return self.schedule.period_at(at.astimezone(self.zone)).usd_per_mwh


class RealTimePrice:
    """A price read over HTTP from JSON (``field``, a dotted path) or CSV (``column``, last row)."""

    def __init__(
        self,
        url: str,
        *,
        format: Literal["json", "csv"] = "json",
        field: str | None = None,
        column: str | None = None,
        unit: PowerUnit = "usd_per_mwh",
        clock: Clock = time.monotonic,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        name: str = "http",
    ) -> None:
        if format == "json" and not field:
            raise ValueError("a JSON price source needs 'field' (a dotted path such as data.-1.price)")
        if format == "csv" and not column:
            raise ValueError("a CSV price source needs 'column' (a header name)")
        if unit not in TO_USD_PER_MWH:
            raise ValueError(f"unit {unit!r}: expected one of {sorted(TO_USD_PER_MWH)}")
        self.name = name
        self.url = url
        self.format = format
        self.field = field
        self.column = column
        self.unit = unit
        self._clock = clock
        self._client = client
        self._timeout = timeout

    async def latest(self) -> PriceQuote:
        response = await http_get(self.name, self.url, client=self._client, timeout=self._timeout)
        if self.format == "json":
            assert self.field is not None
            raw = pick(self.name, json_body(self.name, response), self.field)
            what = self.field
        else:
            raw, what = self._last_cell(response.text), f"column {self.column!r}"
        value = number(self.name, raw, what) * TO_USD_PER_MWH[self.unit]
        return PriceQuote(value, self._clock(), self.name)

    def _last_cell(self, text: str) -> str:
        rows = [row for row in csv.DictReader(io.StringIO(text)) if any((v or "").strip() for v in row.values())]
        if not rows:
            raise PriceError(f"{self.name}: no CSV rows from {self.url}")
        if self.column not in rows[-1]:
            known = ", ".join(str(k) for k in rows[-1])
            raise PriceError(f"{self.name}: no column {self.column!r} in the CSV (columns: {known})")
        return rows[-1][self.column] or ""
