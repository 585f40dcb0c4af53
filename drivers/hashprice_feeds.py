"""Live hashprice ($/PH/day): computed from a mempool.space-style API, or Luxor's Hashrate Index.

Both are HTTP drivers behind :class:`~wattshift.drivers.prices.PriceFeed`; the daemon wraps them
in :class:`~wattshift.drivers.price_checks.CheckedFeed`, so the checks here are only about the
shape of the answer. Payload shapes (checked against the public APIs):

- mempool ``/api/v1/mining/hashrate/3d``: ``{"hashrates": [...], "difficulty": [...],
  "currentHashrate": 9.1e20, "currentDifficulty": 1.52e14}``;
  ``/api/v1/mining/reward-stats/144``: ``{"startBlock": 924001, "endBlock": 924144,
  "totalReward": "45288000000", "totalFee": "288000000", "totalTx": "540000"}`` (sats, as
  digit strings); ``/api/v1/prices``: ``{"time": 1763000000, "USD": 91000, "EUR": ...}``.
- Luxor ``GET /v1/hashrateindex/hashprice?currency=USD&hashunit=PHS&bucket=15m&span=1D`` with
  header ``X-Hi-Api-Key``: ``{"data": [{"timestamp": "2025-11-20T12:00:00Z", "price": 38.2},
  ...]}`` (a bare list is accepted too). Rate limit: a burst of 20, then 1 per 15 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from .price_http import DEFAULT_TIMEOUT_S, http_get, json_body, number, pick
from .prices import Clock, PriceError, PriceQuote, hashprice_usd_per_ph_day

Wall = Callable[[], datetime]
SATS_PER_BTC = 100_000_000
REWARD_BLOCKS = 144  # reward-stats over the last day of blocks: fees vary block to block


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MempoolHashprice:
    """Hashprice from difficulty, the average reward of the last 144 blocks and the BTC price."""

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock = time.monotonic,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        currency: str = "USD",
        name: str = "mempool",
    ) -> None:
        self.name = name
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._client = client
        self._timeout = timeout
        self._currency = currency

    async def _get(self, path: str) -> Any:
        response = await http_get(self.name, self._base + path, client=self._client, timeout=self._timeout)
        return json_body(self.name, response)

    async def latest(self) -> PriceQuote:
        hashrate, rewards, prices = await asyncio.gather(
            self._get("/api/v1/mining/hashrate/3d"),
            self._get(f"/api/v1/mining/reward-stats/{REWARD_BLOCKS}"),
            self._get("/api/v1/prices"),
        )
        difficulty = number(self.name, pick(self.name, hashrate, "currentDifficulty"), "currentDifficulty")
        total_sats = number(self.name, pick(self.name, rewards, "totalReward"), "totalReward")
        btc_price = number(self.name, pick(self.name, prices, self._currency), f"BTC price in {self._currency}")
        if difficulty <= 0 or total_sats <= 0 or btc_price <= 0:
            raise PriceError(f"{self.name}: difficulty {difficulty:g}, totalReward {total_sats:g} sats and "
                             f"{self._currency} {btc_price:g} must all be above zero")
        reward_btc = total_sats / REWARD_BLOCKS / SATS_PER_BTC
        value = hashprice_usd_per_ph_day(difficulty, btc_price, reward_btc)
        return PriceQuote(value, self._clock(), self.name)


class TokenBucket:
    """``burst`` calls at once, then one per ``refill_seconds``; never blocks, only says no."""

    def __init__(self, burst: int, refill_seconds: float, *, clock: Clock = time.monotonic) -> None:
        if burst < 1 or refill_seconds <= 0:
            raise ValueError(f"token bucket: burst {burst} must be >= 1 and refill {refill_seconds} s > 0")
        self.burst = burst
        self.refill_seconds = refill_seconds
        self._clock = clock
        self._tokens = float(burst)
        self._since = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._since) / self.refill_seconds)
        self._since = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class LuxorHashprice:
    """Luxor's Hashrate Index hashprice in USD per PH/s per day, within the API's rate limit.

    Between the calls the bucket allows, the last quote is returned as it was (its ``at`` is when
    it was fetched), so the controller sees its true age. The key is a ``SecretStr`` and goes
    only into the request header.
    """

    PATH = "/v1/hashrateindex/hashprice"

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        clock: Clock = time.monotonic,
        wall: Wall = _utc_now,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        bucket: TokenBucket | None = None,
        max_data_age_seconds: float = 6 * 3600,
        name: str = "luxor",
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + self.PATH
        self._key = api_key
        self._clock = clock
        self._wall = wall
        self._client = client
        self._timeout = timeout
        self._bucket = bucket or TokenBucket(20, 15.0, clock=clock)
        self._max_age = max_data_age_seconds
        self._cached: PriceQuote | None = None
        self.calls = 0  # HTTP calls made: what the rate limit counts

    def __repr__(self) -> str:
        return f"LuxorHashprice({self._url!r}, api_key=SecretStr('**********'))"

    async def latest(self) -> PriceQuote:
        if not self._bucket.take():
            if self._cached is not None:
                return self._cached
            raise PriceError(f"{self.name}: rate limit reached before any quote (1 call per "
                             f"{self._bucket.refill_seconds:g} s)")
        self.calls += 1
        response = await http_get(
            self.name,
            self._url,
            client=self._client,
            timeout=self._timeout,
            params={"currency": "USD", "hashunit": "PHS", "bucket": "15m", "span": "1D"},
            headers={"X-Hi-Api-Key": self._key.get_secret_value()},
        )
        stamp, price = self._newest(json_body(self.name, response))
        age = (self._wall() - stamp).total_seconds()
        if age > self._max_age:
            raise PriceError(f"{self.name}: the newest point is from {stamp.isoformat()}, {age:.0f} s old "
                             f"(more than {self._max_age:g} s)")
        self._cached = PriceQuote(price, self._clock(), self.name)
        return self._cached

    def _newest(self, data: Any) -> tuple[datetime, float]:
        points = data.get("data") if isinstance(data, dict) else data
        if not isinstance(points, list) or not points:
            raise PriceError(
                f"{self.name}: expected a list of {{timestamp, price}} under 'data', got {str(data)[:80]!r}"
            )
        parsed = []
        for index, point in enumerate(points):
            if not isinstance(point, dict):
                raise PriceError(f"{self.name}: point {index} is {point!r}, not {{timestamp, price}}")
            stamp = _timestamp(self.name, point.get("timestamp"), index)
            parsed.append((stamp, number(self.name, point.get("price"), f"point {index} price")))
        return max(parsed, key=lambda p: p[0])


def _timestamp(source: str, value: Any, index: int) -> datetime:
    """ISO 8601 (``Z`` or an offset; naive means UTC) or seconds since the epoch."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError, OSError):
        raise PriceError(f"{source}: point {index} timestamp {value!r} is not a time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
