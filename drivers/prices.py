"""Price feeds: hashprice ($/PH/day) and the price of power ($/MWh).

The live sources live beside this contract: hashprice_feeds (mempool, Luxor), power_prices
(time of use, real-time HTTP), gpu_rates ($/GPU-hour); price_checks holds the sanity rules.

Each feed is a small driver behind :class:`PriceFeed`; the controller keeps the last good quote
and marks it stale by age, so a feed that stops answering never triggers a switch
(DESIGN.md invariant 4). Sources are registered by the name the site file uses.
"""

from __future__ import annotations

import csv
import math
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Protocol

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class PriceQuote:
    value: float
    at: float  # loop-clock time the value was valid at
    source: str


class PriceError(Exception):
    """A feed could not give a sane value; the message names the source and the reason."""


class PriceFeed(Protocol):
    name: str

    async def latest(self) -> PriceQuote: ...


class PublishedPrice(Protocol):
    """A feed that knows prices ahead: a tariff's periods, a day-ahead market's hours. A planning
    policy's forecast reads them (model/forecast.py); a feed that knows only now has no such method."""

    def published_at(self, at: datetime) -> float | None: ...


def published_price(feed: object) -> Callable[[datetime], float | None] | None:
    """The feed's ``published_at``, or None where it publishes nothing."""
    found = getattr(feed, "published_at", None)
    return found if callable(found) else None


def hashprice_usd_per_ph_day(difficulty: float, btc_usd: float, reward_btc_per_block: float) -> float:
    """Revenue of one PH/s for a day (DESIGN.md §4): blocks a PH/s finds times their value."""
    return 86400 * 1e15 * reward_btc_per_block * btc_usd / (difficulty * 2**32)


class FixedPrice:
    def __init__(self, value: float, *, clock: Clock = time.monotonic, name: str = "fixed") -> None:
        if not math.isfinite(value) or value < 0:
            raise PriceError(f"{name}: value {value!r} must be a finite number >= 0")
        self.name = name
        self.value = value
        self._clock = clock

    async def latest(self) -> PriceQuote:
        return PriceQuote(self.value, self._clock(), self.name)


class TracePrice:
    """Replays a ``timestamp,value`` CSV against the clock, ``speedup`` times faster.

    The first row plays at the moment the feed is made; timestamps are ISO 8601 or seconds.
    """

    def __init__(
        self, path: Path, *, clock: Clock = time.monotonic, speedup: float = 1.0, loop: bool = True
    ) -> None:
        self.name = f"trace:{path.name}"
        self._offsets, self._values = _read_trace(path)
        self._clock = clock
        self._start = clock()
        self._speedup = speedup
        self._loop = loop

    @property
    def duration_s(self) -> float:
        return self._offsets[-1] - self._offsets[0]

    def value_at(self, offset_s: float) -> float:
        if self._loop and self.duration_s > 0:
            offset_s %= self.duration_s
        index = max(0, bisect_right(self._offsets, offset_s) - 1)
        return self._values[index]

    async def latest(self) -> PriceQuote:
        now = self._clock()
        return PriceQuote(self.value_at((now - self._start) * self._speedup), now, self.name)


def _read_trace(path: Path) -> tuple[list[float], list[float]]:
    offsets: list[float] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#") or row[0].strip().lower() in ("timestamp", "time"):
                continue
            try:
                stamp, value = row[0].strip(), float(row[1])
                seconds = float(stamp) if _is_number(stamp) else datetime.fromisoformat(stamp).timestamp()
            except (IndexError, ValueError) as err:
                raise PriceError(f"{path}:{number}: expected 'timestamp,value', got {row!r} ({err})") from None
            offsets.append(seconds)
            values.append(value)
    if not offsets:
        raise PriceError(f"{path}: no rows")
    base = offsets[0]
    relative = [o - base for o in offsets]
    if any(b <= a for a, b in pairwise(relative)):
        raise PriceError(f"{path}: timestamps must increase")
    return relative, values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


PriceFactory = Callable[..., PriceFeed]


