"""Write the back-test traces shipped in simulators/traces/ (seeded: the same bytes every run).

    python -m wattshift.simulators.make_traces [DIR]

Synthetic, at real levels (DESIGN.md section 4): hashprice about $45/PH/day after the April 2024
halving, $60 in January 2025, $38 in November 2025, under $35 at the record low; power prices
shaped like ERCOT North hub real-time prices (2024 average about $27/MWh: cheap nights, solar
middays, summer afternoon peaks, occasional negative intervals, scarcity spikes up to the
$5,000/MWh cap); H100 rental $1.70-2.60/GPU-hour. Budgets (``budget_kw``) are sized for
deploy/backtest-site.yaml (a 95 kW contract).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from wattshift.model.trace_columns import HEADER_COLUMNS

STEP = timedelta(minutes=5)
ERCOT = ZoneInfo("America/Chicago")
HEADER = ",".join(HEADER_COLUMNS)


class Market:
    """Prices that wander like the real ones: AR(1) noise around an hourly shape."""

    def __init__(self, seed: int, *, hashprice: float, gpu_rate: float, season: str) -> None:
        self.rng = random.Random(seed)
        self.hashprice = hashprice
        self.level = hashprice
        self.gpu_rate = gpu_rate
        self.season = season
        self.noise = 0.0
        self.spike_left = 0
        self.spike_price = 0.0

    def shape(self, local: datetime) -> float:
        h = local.hour + local.minute / 60
        if self.season == "summer":  # afternoon air-conditioning peak
            return 22 + 55 * math.exp(-((h - 17.5) / 2.2) ** 2) + 8 * math.exp(-((h - 8) / 2) ** 2)
        if self.season == "winter":  # morning and evening heating peaks
            return 24 + 22 * math.exp(-((h - 7.5) / 1.5) ** 2) + 26 * math.exp(-((h - 19) / 2) ** 2)
        # spring/autumn: solar middays push prices down, evenings up
        return 25 - 14 * math.exp(-((h - 13) / 2.5) ** 2) + 20 * math.exp(-((h - 20) / 1.8) ** 2)

    def power(self, local: datetime, *, spike_chance: float) -> float:
        self.noise = 0.92 * self.noise + self.rng.gauss(0, 0.09)
        price = self.shape(local) * math.exp(self.noise)
        if self.season != "summer" and local.hour in (1, 2, 3, 4) and self.rng.random() < 0.03:
            price = self.rng.uniform(-12, -1)  # windy nights: negative intervals
        if self.spike_left == 0 and self.rng.random() < spike_chance:
            self.spike_left = self.rng.randint(1, 6)
            self.spike_price = self.rng.choice([120, 250, 400, 900, 1500])
        if self.spike_left:
            self.spike_left -= 1
            price = max(price, self.spike_price * self.rng.uniform(0.8, 1.2))
        return round(price, 2)

    def hash(self, at: datetime) -> float:
        if at.hour == 0 and at.minute == 0:  # the index moves about 2% a day
            self.level = self.hashprice + 0.6 * (self.level - self.hashprice) + self.rng.gauss(0, 0.02) * self.hashprice
        return round(self.level * (1 + self.rng.gauss(0, 0.003)), 3)

    def rate(self, local: datetime) -> float:
        busy = 0.06 if 9 <= local.hour < 21 else -0.04  # spot rates firm up in working hours
        return round(self.gpu_rate * (1 + busy + self.rng.gauss(0, 0.02)), 3)


def steps(start: datetime, days: float) -> Iterator[datetime]:
    for i in range(int(days * 24 * 12)):
        yield start + i * STEP


def row(
    at: datetime, hashprice: float, power: float, budget: float | None, rate: float | None, demand: int | None
) -> str:
    cells = [at.isoformat(), f"{hashprice:g}", f"{power:g}", "" if budget is None else f"{budget:g}",
             "" if rate is None else f"{rate:g}", "" if demand is None else str(demand)]
    return ",".join(cells)


def hashprice_2024_2026() -> tuple[str, list[str]]:
    note = """Hashprice at 2024-2026 levels: four 3-day windows at 5-minute steps, each at its era's level
(May 2024 after the halving ~$45/PH/day; January 2025 ~$60; November 2025 ~$38; February 2026
record low ~$33), power shaped like ERCOT North hub real-time prices for the season (averages
$22-35/MWh, negative windy nights, a few scarcity intervals). No GPU work: this trace judges the
mining decisions alone. Rows jump between windows; the back-test counts each row as one step."""
    windows = [(datetime(2024, 5, 14, tzinfo=UTC), 45.0, "spring"),
               (datetime(2025, 1, 14, tzinfo=UTC), 60.0, "winter"),
               (datetime(2025, 11, 11, tzinfo=UTC), 38.0, "autumn"),
               (datetime(2026, 2, 10, tzinfo=UTC), 33.0, "winter")]
    rows = []
    for n, (start, level, season) in enumerate(windows):
        market = Market(100 + n, hashprice=level, gpu_rate=2.0, season=season)
        for at in steps(start, 3):
            rows.append(row(at, market.hash(at), market.power(at.astimezone(ERCOT), spike_chance=0.002),
                            None, None, None))
    return note, rows


def spike_day() -> tuple[str, list[str]]:
    note = """A power-price spike day: 8 August 2024 (a Thursday) at 5-minute steps, ERCOT-like summer prices
climbing through the afternoon into scarcity pricing, with intervals at the $5,000/MWh cap from
17:00 to 19:00 local time. Hashprice ~$42/PH/day (August 2024); both GPU nodes have work at
~$2.40/GPU-hour."""
    market = Market(200, hashprice=42.0, gpu_rate=2.4, season="summer")
    rows = []
    for at in steps(datetime(2024, 8, 8, 5, tzinfo=UTC), 1):  # local midnight (CDT)
        local = at.astimezone(ERCOT)
        price = market.power(local, spike_chance=0.0)
        h = local.hour + local.minute / 60
        if 14 <= h < 17:
            price = round(price * (1 + 6 * (h - 14)) + market.rng.uniform(0, 60), 2)  # tightening
        elif 17 <= h < 19:
            price = 5000.0 if market.rng.random() < 0.7 else round(market.rng.uniform(1200, 4000), 2)
        elif 19 <= h < 20:
            price = round(market.rng.uniform(150, 600), 2)
        rows.append(row(at, market.hash(at), price, None, market.rate(local), 2))
    return note, rows


def four_cp_month() -> tuple[str, list[str]]:
    note = """A 4CP summer month: August 2025 at 5-minute steps. On the eight weekdays most likely to set an
ERCOT 4CP peak (hot days), the site cuts its budget to 30 kW from 16:00 to 18:00 local time (and
to 60 kW in the half hour around it); prices are summer-shaped with scarcity intervals on hot
afternoons. Hashprice ~$55/PH/day; GPU jobs arrive and finish (0-2 nodes with work) at
~$2.0/GPU-hour."""
    market = Market(300, hashprice=55.0, gpu_rate=2.0, season="summer")
    peak_days = {4, 5, 7, 12, 13, 19, 21, 26}
    demand = 2
    rows = []
    for at in steps(datetime(2025, 8, 1, 5, tzinfo=UTC), 31):
        local = at.astimezone(ERCOT)
        h = local.hour + local.minute / 60
        hot = local.day in peak_days
        budget = None
        if hot and 16 <= h < 18:
            budget = 30.0
        elif hot and (15.5 <= h < 16 or 18 <= h < 18.5):
            budget = 60.0
        price = market.power(local, spike_chance=0.01 if hot and 14 <= h < 19 else 0.0005)
        if market.rng.random() < 0.004:  # a job finishes or one arrives, about every 20 hours
            demand = max(0, min(2, demand + market.rng.choice([-1, 1])))
        rows.append(row(at, market.hash(at), price, budget, market.rate(local), demand))
    return note, rows


def gpu_week() -> tuple[str, list[str]]:
    note = """A GPU demand week: 9-15 March 2026 at 5-minute steps. Jobs arrive and end (0-2 of the 2 nodes
with work; busier in working hours), the H100 rate moves between ~$1.70 and $2.60/GPU-hour with
the spot market; spring ERCOT prices with two scarcity afternoons; hashprice ~$36/PH/day."""
    market = Market(400, hashprice=36.0, gpu_rate=2.15, season="spring")
    rows = []
    demand = 1
    for at in steps(datetime(2026, 3, 9, 5, tzinfo=UTC), 7):
        local = at.astimezone(ERCOT)
        day_rate = 2.15 + 0.3 * math.sin(2 * math.pi * (local.timetuple().tm_yday % 7) / 7)
        market.gpu_rate = day_rate
        busy = 9 <= local.hour < 21
        if market.rng.random() < (0.02 if busy else 0.008):
            demand = max(0, min(2, demand + (1 if market.rng.random() < (0.6 if busy else 0.35) else -1)))
        scarce = local.day in (11, 13) and 15 <= local.hour < 18
        price = market.power(local, spike_chance=0.08 if scarce else 0.001)
        rows.append(row(at, market.hash(at), price, None, market.rate(local), demand))
    return note, rows


TRACES: dict[str, Callable[[], tuple[str, list[str]]]] = {
    "hashprice_2024_2026.csv": hashprice_2024_2026,
    "power_spike_day.csv": spike_day,
    "four_cp_summer_month.csv": four_cp_month,
    "gpu_demand_week.csv": gpu_week,
}


def write(directory: Path) -> list[Path]:
    written = []
    for name, make in TRACES.items():
        note, rows = make()
        head = [f"# {line}" for line in note.splitlines()]
        head += ["# Synthetic, at real levels; made by `python -m wattshift.simulators.make_traces` (seeded).",
                 "# Format: docs/backtest.md. Not market data: for back-tests and demos, not for trading."]
        path = directory / name
        path.write_text("\n".join([*head, HEADER, *rows]) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path(__file__).parent / "traces"
    for path in write(directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
