"""The columns of a price and event trace: what the back-test reads and the trace maker writes."""

from __future__ import annotations

REQUIRED = ("timestamp", "hashprice_usd_per_ph_day", "power_usd_per_mwh")
OPTIONAL = ("budget_kw", "gpu_rate_usd_per_gpu_hour", "gpu_demand", "day_ahead_usd_per_mwh")
HEADER_COLUMNS = REQUIRED + OPTIONAL
