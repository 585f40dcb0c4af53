"""Realistic answers of the price APIs, shaped like the real ones (field names, types, nesting).

Numbers default to the DESIGN.md worked example: difficulty 152e12, BTC $91,000, a 3.125 BTC
subsidy plus 0.02 BTC of fees per block -> about $37.9/PH/day.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

WORKED_DIFFICULTY = 152e12
WORKED_BTC_USD = 91_000
WORKED_REWARD_BTC = 3.145
WORKED_HASHPRICE = 37.9

# A site file's time-of-use tariff (prices block): peak on weekday afternoons, the week covered once.
TARIFF = """
power_usd_per_mwh:
  source: time_of_use
  timezone: America/Chicago
  periods:
    - {name: peak, days: mon-fri, start: "14:00", end: "19:00", usd_per_mwh: 95}
    - {name: off-peak, days: mon-fri, start: "19:00", end: "14:00", usd_per_mwh: 32}
    - {name: weekend, days: [sat, sun], start: "14:00", end: "14:00", usd_per_mwh: 28}
"""


def mempool_hashrate_3d(difficulty: float = WORKED_DIFFICULTY) -> dict[str, Any]:
    start = 1_763_000_000
    return {
        "hashrates": [{"timestamp": start + day * 86400, "avgHashrate": 1.09e21 + day * 1e18} for day in range(3)],
        "difficulty": [{"time": start - 86400 * 9, "height": 923_328, "difficulty": 1.5628e14, "adjustment": -2.73}],
        "currentHashrate": 1.094e21,
        "currentDifficulty": difficulty,
    }


def mempool_reward_stats(reward_btc_per_block: float = WORKED_REWARD_BTC, blocks: int = 144) -> dict[str, Any]:
    total = round(reward_btc_per_block * blocks * 100_000_000)
    fees = total - 3.125 * blocks * 100_000_000
    # mempool sends the sums as digit strings (they overflow JavaScript's safe integers over time)
    return {"startBlock": 924_001, "endBlock": 924_000 + blocks, "totalReward": str(total),
            "totalFee": str(round(fees)), "totalTx": "531207"}


def mempool_prices(btc_usd: float = WORKED_BTC_USD) -> dict[str, Any]:
    return {"time": int(time.time()), "USD": btc_usd, "EUR": round(btc_usd * 0.86), "GBP": round(btc_usd * 0.76),
            "CAD": round(btc_usd * 1.4), "CHF": round(btc_usd * 0.8), "AUD": round(btc_usd * 1.53),
            "JPY": round(btc_usd * 155)}


def luxor_hashprice(prices: list[float], newest: datetime, step: timedelta = timedelta(minutes=15)) -> dict[str, Any]:
    """Luxor's span series, oldest first (the feed must not rely on the order)."""
    points = [{"timestamp": (newest - step * (len(prices) - 1 - i)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "price": price} for i, price in enumerate(prices)]
    return {"data": points}


def vast_offer(offer_id: int, gpu_name: str, num_gpus: int, dph_total: float, *, reliability2: float = 0.995,
               rentable: bool = True, verified: bool = True) -> dict[str, Any]:
    """One offer as the bundles API lists it (a subset of its ~90 fields, the ones that matter)."""
    return {
        "id": offer_id, "ask_contract_id": offer_id, "machine_id": 10_000 + offer_id, "host_id": 200_000 + offer_id,
        "gpu_name": gpu_name, "num_gpus": num_gpus, "gpu_ram": 81559, "gpu_total_ram": 81559 * num_gpus,
        "gpu_frac": 1.0, "cpu_cores_effective": 24.0 * num_gpus, "cpu_ram": 128_000 * num_gpus,
        "disk_space": 1000.0, "inet_up": 2500.0, "inet_down": 4800.0,
        "dph_base": round(dph_total * 0.97, 4), "dph_total": dph_total, "storage_cost": 0.1,
        "reliability": reliability2 - 0.001, "reliability2": reliability2, "rentable": rentable,
        "rented": False, "verified": verified, "external": False, "geolocation": "Texas, US",
        "cuda_max_good": 12.8, "driver_version": "570.133.07", "compute_cap": 900, "dlperf": 98.5 * num_gpus,
        "total_flops": 61.0 * num_gpus, "direct_port_count": 40, "is_bid": False, "min_bid": round(dph_total * 0.6, 4),
    }
