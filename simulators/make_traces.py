"""Write the back-test traces shipped in simulators/traces/ (seeded: the same bytes every run).

    python -m wattshift.simulators.make_traces [DIR]

Synthetic, at real levels (DESIGN.md section 4): hashprice about $45/PH/day after the April 2024
halving, $60 in January 2025, $38 in November 2025, under $35 at the record low; power prices
shaped like ERCOT North hub real-time prices (2024 average about $27/MWh: cheap nights, solar
middays, summer afternoon peaks, occasional negative intervals, scarcity spikes up to the
$5,000/MWh cap); H100 rental $1.70-2.60/GPU-hour. Budgets (``budget_kw``) are sized for
deploy/backtest-site.yaml (a 95 kW contract). Each trace with a power price also carries the
day-ahead price (``day_ahead_usd_per_mwh``): hourly, from what the market expected (class
DayAhead), never from the real-time rows.
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


class DayAhead:
    """The day-ahead price as ERCOT's market clears it the day before: one price per clock hour.

    It is made from ``expected``, the trace's model of what the market expected at a local time
    (the seasonal shape and the features its story says were scheduled), never from the
    real-time rows: short spikes drawn in real time are not in it. Each hour's price is the mean
    expectation over the hour times a forecast error of about 10 % (correlated from one hour to
    the next). The error has its own seeded generator, so the real-time columns draw the same
    numbers they drew before this column existed.
    """

    def __init__(self, seed: int, expected: Callable[[datetime], float]) -> None:
        self.rng = random.Random(seed)
        self.expected = expected
        self.error = self.rng.gauss(0, 0.1)
        self.hour: datetime | None = None
        self.price = 0.0

    def at(self, at: datetime) -> float:
        hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)  # ERCOT's offsets are whole hours
        if hour != self.hour:
            if self.hour is not None:
                self.error = 0.6 * self.error + self.rng.gauss(0, 0.08)  # stationary spread 0.1
            mean = sum(self.expected((hour + k * STEP).astimezone(ERCOT)) for k in range(12)) / 12
            self.hour, self.price = hour, round(mean * math.exp(self.error), 2)
        return self.price


def hot_afternoon(local: datetime) -> float:
    """How much a hot afternoon's expected scarcity lifts the day-ahead price (x1 outside 14-19 h)."""
    h = local.hour + local.minute / 60
    return 1 + 0.4 * math.exp(-((h - 17) / 2) ** 2) if 14 <= h < 19 else 1.0


def steps(start: datetime, days: float) -> Iterator[datetime]:
    for i in range(int(days * 24 * 12)):
        yield start + i * STEP


def row(
    at: datetime, hashprice: float, power: float, budget: float | None, rate: float | None, demand: int | None,
    day_ahead: float,
) -> str:
    cells = [at.isoformat(), f"{hashprice:g}", f"{power:g}", "" if budget is None else f"{budget:g}",
             "" if rate is None else f"{rate:g}", "" if demand is None else str(demand), f"{day_ahead:g}"]
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
        day_ahead = DayAhead(1100 + n, market.shape)
        for at in steps(start, 3):
            rows.append(row(at, market.hash(at), market.power(at.astimezone(ERCOT), spike_chance=0.002),
                            None, None, None, day_ahead.at(at)))
    return note, rows


def spike_day() -> tuple[str, list[str]]:
    note = """A power-price spike day: 8 August 2024 (a Thursday) at 5-minute steps, ERCOT-like summer prices
climbing through the afternoon into scarcity pricing, with intervals at the $5,000/MWh cap from
17:00 to 19:00 local time. Hashprice ~$42/PH/day (August 2024); both GPU nodes have work at
~$2.40/GPU-hour."""
    market = Market(200, hashprice=42.0, gpu_rate=2.4, season="summer")

    def expected(local: datetime) -> float:  # a forecast heat peak: tight, but no cap intervals
        h = local.hour + local.minute / 60
        return market.shape(local) * (1 + 3.5 * math.exp(-((h - 17.5) / 1.6) ** 2))

    day_ahead = DayAhead(1200, expected)
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
        rows.append(row(at, market.hash(at), price, None, market.rate(local), 2, day_ahead.at(at)))
    return note, rows


def four_cp_month() -> tuple[str, list[str]]:
    note = """A 4CP summer month: August 2025 at 5-minute steps. On the eight weekdays most likely to set an
ERCOT 4CP peak (hot days), the site cuts its budget to 30 kW from 16:00 to 18:00 local time (and
to 60 kW in the half hour around it); prices are summer-shaped with scarcity intervals on hot
afternoons. Hashprice ~$55/PH/day; GPU jobs arrive and finish (0-2 nodes with work) at
~$2.0/GPU-hour."""
    market = Market(300, hashprice=55.0, gpu_rate=2.0, season="summer")
    peak_days = {4, 5, 7, 12, 13, 19, 21, 26}
    day_ahead = DayAhead(1300, lambda local: market.shape(local) * (hot_afternoon(local) if local.day in peak_days
                                                                     else 1.0))
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
        rows.append(row(at, market.hash(at), price, budget, market.rate(local), demand, day_ahead.at(at)))
    return note, rows


def gpu_week() -> tuple[str, list[str]]:
    note = """A GPU demand week: 9-15 March 2026 at 5-minute steps. Jobs arrive and end (0-2 of the 2 nodes
with work; busier in working hours), the H100 rate moves between ~$1.70 and $2.60/GPU-hour with
the spot market; spring ERCOT prices with two scarcity afternoons; hashprice ~$36/PH/day."""
    market = Market(400, hashprice=36.0, gpu_rate=2.15, season="spring")
    # The two scarcity afternoons were forecast as tight (twice the usual price), their spikes not.
    day_ahead = DayAhead(1400, lambda local: market.shape(local) * (2.0 if local.day in (11, 13)
                                                                     and 15 <= local.hour < 18 else 1.0))
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
        rows.append(row(at, market.hash(at), price, None, market.rate(local), demand, day_ahead.at(at)))
    return note, rows


def gpu_plateau() -> tuple[str, list[str]]:
    note = """A price plateau during a GPU training run: 2-3 June 2025 at 5-minute steps. Both nodes train a
suspendable job all along at ~$2.0/GPU-hour (~$2,200/MWh of a node's 7.2 kW). On the first
afternoon the price sits at ~$3,000/MWh for 3 hours (15:00-18:00 local): worth suspending
for, once, whatever the checkpoint and restart cost. On the second a lone 15-minute spike to
~$4,000/MWh (16:00 local) costs less than an interruption: worth riding through. Spring
prices otherwise; hashprice ~$45/PH/day."""
    market = Market(500, hashprice=45.0, gpu_rate=2.0, season="spring")

    def expected(local: datetime) -> float:  # the plateau was scheduled tightness, the spike a surprise
        return 3000.0 if local.day == 2 and 15 <= local.hour < 18 else market.shape(local)

    day_ahead = DayAhead(1500, expected)
    rows = []
    for at in steps(datetime(2025, 6, 2, 5, tzinfo=UTC), 2):
        local = at.astimezone(ERCOT)
        h = local.hour + local.minute / 60
        price = market.power(local, spike_chance=0.0)
        if local.day == 2 and 15 <= h < 18:
            price = round(3000 * market.rng.uniform(0.97, 1.03), 2)
        elif local.day == 3 and 16 <= h < 16.25:
            price = round(4000 * market.rng.uniform(0.97, 1.03), 2)
        rows.append(row(at, market.hash(at), price, None, round(2.0 * (1 + market.rng.gauss(0, 0.01)), 3), 2,
                        day_ahead.at(at)))
    return note, rows


def negative_week() -> tuple[str, list[str]]:
    note = """Negative prices: a windy, sunny spring week (7-13 April 2025) at 5-minute steps. Wind drives the
night price below zero (-$5 to -$40/MWh for hours) and solar the midday one; evenings climb
to $40-90/MWh. Running is paid for while the price is negative, booting too (its draw earns).
Hashprice ~$48/PH/day; no GPU work."""
    market = Market(600, hashprice=48.0, gpu_rate=2.0, season="spring")

    def expected(local: datetime) -> float:  # wind and sun are forecast: their hours cleared negative
        h = local.hour + local.minute / 60
        windy = local.day % 3 != 0
        return -5 - 35 / 3 if (windy and (h < 5 or h >= 23)) or 11 <= h < 15 else market.shape(local)

    day_ahead = DayAhead(1600, expected)
    rows = []
    for at in steps(datetime(2025, 4, 7, 5, tzinfo=UTC), 7):
        local = at.astimezone(ERCOT)
        h = local.hour + local.minute / 60
        price = market.power(local, spike_chance=0.0005)
        windy = local.day % 3 != 0  # two nights in three
        if (windy and (h < 5 or h >= 23)) or 11 <= h < 15:
            price = round(-5 - 35 * market.rng.random() ** 2, 2)
        rows.append(row(at, market.hash(at), price, None, None, None, day_ahead.at(at)))
    return note, rows


def four_cp_windows() -> tuple[str, list[str]]:
    note = """4CP windows, as a site running its own peak forecast sees them: 18-24 August 2025 at 5-minute
steps. Every weekday afternoon the forecast calls one to three windows of 15-60 minutes between
15:00 and 19:00 local, cutting the budget to 25 kW, some only 10-20 minutes apart: a miner
stopped for one is still inside its minimum down time when the next ends. Summer prices with
scarcity intervals; hashprice ~$52/PH/day; one GPU node with work at ~$2.0/GPU-hour."""
    market = Market(700, hashprice=52.0, gpu_rate=2.0, season="summer")
    day_ahead = DayAhead(1700, lambda local: market.shape(local) * hot_afternoon(local))
    windows: dict[int, list[tuple[float, float]]] = {}
    for day in range(18, 25):
        if datetime(2025, 8, day).weekday() >= 5:
            continue
        start, calls = 15.0 + market.rng.choice([0.0, 0.25, 0.5]), []
        for _ in range(market.rng.randint(1, 3)):
            length = market.rng.choice([0.25, 0.5, 0.75, 1.0])
            calls.append((start, start + length))
            start += length + market.rng.choice([1 / 6, 0.25, 1 / 3, 1.0])
        windows[day] = calls
    rows = []
    for at in steps(datetime(2025, 8, 18, 5, tzinfo=UTC), 7):
        local = at.astimezone(ERCOT)
        h = local.hour + local.minute / 60
        cut = any(a <= h < b for a, b in windows.get(local.day, []))
        price = market.power(local, spike_chance=0.01 if 14 <= h < 19 else 0.0005)
        rows.append(row(at, market.hash(at), price, 25.0 if cut else None, market.rate(local), 1, day_ahead.at(at)))
    return note, rows


def low_hashprice_month() -> tuple[str, list[str]]:
    note = """A low-hashprice month: November 2025 at 5-minute steps with hashprice near the record low,
~$30/PH/day. The older miners earn $50-80/MWh at their best setting and the newest ~$95, so
evening peaks ($40-120/MWh) and noisy intervals cross their break-even many times a day: a
policy that switches for free flaps; one that pays for its starts (wear, boot) should not.
Autumn ERCOT-like prices; no GPU work."""
    market = Market(800, hashprice=30.0, gpu_rate=2.0, season="autumn")
    day_ahead = DayAhead(1800, lambda local: market.shape(local) * 1.6)  # the tight month was no surprise
    rows = []
    for at in steps(datetime(2025, 11, 1, 5, tzinfo=UTC), 30):
        local = at.astimezone(ERCOT)
        price = market.power(local, spike_chance=0.001) * 1.6  # a tight month: prices above the usual autumn
        rows.append(row(at, market.hash(at), round(price, 2), None, None, None, day_ahead.at(at)))
    return note, rows


TRACES: dict[str, Callable[[], tuple[str, list[str]]]] = {
    "hashprice_2024_2026.csv": hashprice_2024_2026,
    "power_spike_day.csv": spike_day,
    "four_cp_summer_month.csv": four_cp_month,
    "gpu_demand_week.csv": gpu_week,
    "gpu_plateau_training.csv": gpu_plateau,
    "negative_prices_week.csv": negative_week,
    "four_cp_windows_week.csv": four_cp_windows,
    "low_hashprice_month.csv": low_hashprice_month,
}


def write(directory: Path) -> list[Path]:
    written = []
    for name, make in TRACES.items():
        note, rows = make()
        head = [f"# {line}" for line in note.splitlines()]
        head += ["# day_ahead_usd_per_mwh: the day-ahead price, hourly, from what the market expected (no real-time",
                 "# spikes); a forecast, while each step settles at power_usd_per_mwh.",
                 "# Synthetic, at real levels; made by `python -m wattshift.simulators.make_traces` (seeded).",
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
