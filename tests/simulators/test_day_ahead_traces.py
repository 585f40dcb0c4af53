"""The shipped traces' day-ahead column says what their stories claim the market expected.

A day-ahead price is one price per clock hour, cleared the day before: scheduled tightness (the
plateau, a hot afternoon, windy and sunny hours below zero) is in it, short real-time spikes and
scarcity intervals are not.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from wattshift.daemon.backtest.trace import Trace, TraceRow, load_trace
from wattshift.simulators.make_traces import TRACES

TRACE_DIR = Path(__file__).resolve().parents[2] / "simulators" / "traces"
ERCOT = ZoneInfo("America/Chicago")


def hours(trace: Trace) -> dict[tuple[date, int], list[TraceRow]]:
    """The rows of each local clock hour (ERCOT's offsets are whole hours; no story trace spans a clock change)."""
    by_hour: dict[tuple[date, int], list[TraceRow]] = defaultdict(list)
    for row in trace.rows:
        local = row.at.astimezone(ERCOT)
        by_hour[local.date(), local.hour].append(row)
    return by_hour


def day_ahead(rows: list[TraceRow]) -> float:
    prices = {r.day_ahead_usd_per_mwh for r in rows}
    assert len(prices) == 1, f"the hour from {rows[0].at} has day-ahead prices {prices}"
    (price,) = prices
    assert price is not None
    return price


@pytest.mark.parametrize("name", list(TRACES))
def test_every_shipped_trace_has_one_day_ahead_price_per_clock_hour(name: str) -> None:
    by_hour: dict[datetime, list[TraceRow]] = defaultdict(list)
    for row in load_trace(TRACE_DIR / name).rows:  # by UTC hour: the hour the clocks go back is two
        by_hour[row.at.astimezone(UTC).replace(minute=0)].append(row)
    prices = [day_ahead(rows) for rows in by_hour.values()]
    assert len(set(prices)) > len(prices) // 2  # hourly prices, not one flat figure


def test_the_plateau_is_in_the_day_ahead_price_and_the_15_minute_spike_is_not() -> None:
    by_hour = hours(load_trace(TRACE_DIR / "gpu_plateau_training.csv"))
    first, second = date(2025, 6, 2), date(2025, 6, 3)
    plateau = [day_ahead(by_hour[first, h]) for h in (15, 16, 17)]
    rest = [day_ahead(rows) for (day, h), rows in by_hour.items() if day == first and h not in (15, 16, 17)]
    assert len(rest) == 21
    assert all(2000 <= p <= 4000 for p in plateau), plateau  # roughly its ~$3,000 level, with error
    assert min(plateau) > 20 * max(rest)
    spike = by_hour[second, 16]
    assert max(r.power_usd_per_mwh for r in spike) > 3500  # the real-time spike is there
    others = [day_ahead(rows) for (day, h), rows in by_hour.items() if day == second and h != 16]
    assert day_ahead(spike) < 2 * statistics.median(others) and day_ahead(spike) < 100


def test_a_tight_afternoon_is_in_the_day_ahead_price_and_the_cap_intervals_are_not() -> None:
    trace = load_trace(TRACE_DIR / "power_spike_day.csv")
    by_hour = hours(trace)
    day = date(2024, 8, 8)
    assert max(r.power_usd_per_mwh for r in trace.rows) == 5000  # the cap intervals, 17:00-19:00
    afternoon = [day_ahead(by_hour[day, h]) for h in (17, 18)]
    morning = [day_ahead(by_hour[day, h]) for h in range(9, 13)]
    assert min(afternoon) > 4 * max(morning)  # the market expected a tight afternoon...
    assert max(day_ahead(rows) for rows in by_hour.values()) < 1000  # ...not scarcity at the cap


def test_forecast_windy_nights_and_sunny_middays_clear_negative_day_ahead() -> None:
    by_hour = hours(load_trace(TRACE_DIR / "negative_prices_week.csv"))
    middays = [day_ahead(rows) for (_, h), rows in by_hour.items() if 11 <= h < 15]
    evenings = [day_ahead(rows) for (_, h), rows in by_hour.items() if 19 <= h < 22]
    assert len(middays) == 28 and max(middays) < 0
    assert min(evenings) > 0
