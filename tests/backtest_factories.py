"""Builders for back-test tests: a site and a trace in a few lines each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from wattshift.daemon.backtest.site import BacktestSite
from wattshift.daemon.backtest.trace import Trace, parse_trace
from wattshift.model.trace_columns import HEADER_COLUMNS

START = datetime(2025, 8, 1, tzinfo=UTC)


# Switching for free (the physics before issue 15), for tests about something else.
FREE_SWITCHING = {"boot_seconds": 0, "wear_usd_per_cycle": 0, "min_up_seconds": 0, "min_down_seconds": 0}


def site(**fields: Any) -> BacktestSite:
    """A site from keyword fields (kW, as in the file); one S21 on the site circuit by default."""
    data: dict[str, Any] = {"name": "tiny", "budget_kw": 100, "miners": [{"model": "Antminer S21", "count": 1}]}
    data.update(fields)
    return BacktestSite.model_validate(data)


def gpu_node(**fields: Any) -> dict[str, Any]:
    """One 8x H100 node with no switching costs unless given."""
    return {"count": 1, "checkpoint_seconds": 0, "restart_seconds": 0, "penalty_usd": 0, **fields}


def trace(rows: list[dict[str, Any]], *, minutes: float = 60.0) -> Trace:
    """Rows of ``{hashprice, power, budget_kw, gpu_rate, gpu_demand, day_ahead}``, ``minutes`` apart."""
    lines = [",".join(HEADER_COLUMNS)]
    for i, row in enumerate(rows):
        at = START + timedelta(minutes=minutes * i)
        cells = [at.isoformat(), str(row.get("hashprice", 45.0)), str(row["power"]), str(row.get("budget_kw", "")),
                 str(row.get("gpu_rate", "")), str(row.get("gpu_demand", "")), str(row.get("day_ahead", ""))]
        lines.append(",".join(cells))
    return parse_trace("\n".join(lines), name="test")
