"""Back-test traces: prices and events per step, from a CSV (format: docs/backtest.md).

Lines starting with ``#`` are comments (how the trace was made). Columns by header name:
``timestamp, hashprice_usd_per_ph_day, power_usd_per_mwh`` always; ``budget_kw`` (an empty cell:
no event, the site's own budget), ``gpu_rate_usd_per_gpu_hour``, ``gpu_demand`` (GPU nodes
with work) and ``day_ahead_usd_per_mwh`` (the day-ahead price: a forecast a policy may read; the
step still settles at ``power_usd_per_mwh``) optionally. A bad cell is refused with the file,
line, column, value and reason.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from wattshift.model.trace_columns import OPTIONAL, REQUIRED

MAX_POWER_USD_PER_MWH = 100_000.0  # far above any market cap ($5,000 in ERCOT): a unit error
MIN_POWER_USD_PER_MWH = -10_000.0


class TraceInvalid(ValueError):
    """The trace was refused; the message names the file, line, column, value and reason."""


@dataclass(frozen=True, slots=True)
class TraceRow:
    at: datetime
    hashprice_usd_per_ph_day: float
    power_usd_per_mwh: float
    budget_watts: float | None  # None: no event, the site's own budget
    gpu_rate_usd_per_gpu_hour: float | None
    gpu_demand: int
    day_ahead_usd_per_mwh: float | None  # None: no day-ahead price for this step


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    rows: tuple[TraceRow, ...]
    step_seconds: float  # the most common interval between rows
    durations: tuple[float, ...]  # seconds each row stands for (a gap counts one step)

    @property
    def seconds(self) -> float:
        return sum(self.durations)

    def first_days(self, days: float) -> Trace:
        """The trace's first ``days`` (all of it when it is shorter)."""
        n = int(days * 86_400 / self.step_seconds)
        return replace(self, rows=self.rows[:n], durations=self.durations[:n])


def load_trace(path: Path) -> Trace:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TraceInvalid(f"{path}: cannot read: {err.strerror}") from None
    return parse_trace(text, name=str(path))


def parse_trace(text: str, *, name: str) -> Trace:
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise TraceInvalid(f"{name}: no header and no rows")
    header_line, header = lines[0]
    columns = [c.strip() for c in next(csv.reader([header]))]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise TraceInvalid(f"{name}:{header_line}: header: missing column(s) {missing} (has {columns})")
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise TraceInvalid(
            f"{name}:{header_line}: header: unknown column(s) {unknown} (known: {list(REQUIRED + OPTIONAL)})"
        )
    rows: list[TraceRow] = []
    for number, cells in zip((n for n, _ in lines[1:]), csv.reader(line for _, line in lines[1:]), strict=True):
        if len(cells) != len(columns):
            raise TraceInvalid(f"{name}:{number}: expected {len(columns)} cells, found {len(cells)}")
        row = dict(zip(columns, (c.strip() for c in cells), strict=True))
        rows.append(_row(row, f"{name}:{number}"))
        if len(rows) > 1 and rows[-1].at <= rows[-2].at:
            raise TraceInvalid(f"{name}:{number}: timestamp: {row['timestamp']!r} is not after the row before")
    if not rows:
        raise TraceInvalid(f"{name}: a header and no rows")
    gaps = [(b.at - a.at).total_seconds() for a, b in pairwise(rows)]
    step = Counter(gaps).most_common(1)[0][0] if gaps else 300.0
    durations = (*(min(g, step) for g in gaps), step)
    return Trace(name, tuple(rows), step, durations)


def _row(row: dict[str, str], where: str) -> TraceRow:
    try:
        at = datetime.fromisoformat(row["timestamp"])
    except ValueError:
        raise TraceInvalid(f"{where}: timestamp: {row['timestamp']!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise TraceInvalid(f"{where}: timestamp: {row['timestamp']!r} has no UTC offset")
    hashprice = _number(row, "hashprice_usd_per_ph_day", where, low=0.0, high=10_000.0)
    power = _number(row, "power_usd_per_mwh", where, low=MIN_POWER_USD_PER_MWH, high=MAX_POWER_USD_PER_MWH)
    budget = _number(row, "budget_kw", where, low=0.0, high=10_000_000.0, optional=True)
    rate = _number(row, "gpu_rate_usd_per_gpu_hour", where, low=0.0, high=1_000.0, optional=True)
    demand = _number(row, "gpu_demand", where, low=0.0, high=1_000_000.0, optional=True)
    day_ahead = _number(row, "day_ahead_usd_per_mwh", where, low=MIN_POWER_USD_PER_MWH, high=MAX_POWER_USD_PER_MWH,
                        optional=True)
    if demand is not None and demand != int(demand):
        raise TraceInvalid(f"{where}: gpu_demand: {row['gpu_demand']!r} is not a whole number of nodes")
    assert hashprice is not None and power is not None
    return TraceRow(at, hashprice, power, None if budget is None else budget * 1000.0, rate,
                    int(demand or 0), day_ahead)


def _number(
    row: dict[str, str], column: str, where: str, *, low: float, high: float, optional: bool = False
) -> float | None:
    text = row.get(column, "")
    if text == "":
        if optional:
            return None
        raise TraceInvalid(f"{where}: {column}: empty, and it is required")
    try:
        value = float(text)
    except ValueError:
        raise TraceInvalid(f"{where}: {column}: {text!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise TraceInvalid(f"{where}: {column}: {text!r} is outside {low:g}..{high:g}")
    return value
