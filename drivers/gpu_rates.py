"""GPU rental rates ($/GPU-hour) per GPU model: what an hour of a GPU earns on the market.

A rate feed is a price feed for one GPU model, so the controller keeps, ages and holds its
quotes exactly as it does hashprice (a stale rate never triggers a switch), and the same sanity
rules wrap it. Sources: a fixed contract rate, a trace, and a marketplace in the shape of Vast.ai's
offers API, ``GET /api/v0/bundles/?q={json}``, which answers ``{"offers": [{"id", "gpu_name":
"H100 SXM", "num_gpus": 8, "dph_total": 17.6 ($/h for the whole offer), "reliability2": 0.997,
"rentable": true, "verified": true, ...}]}``. The market rate is the median per-GPU price of the
offers that pass the filter: the median, because a few absurd listings must not move it.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx

from wattshift.model.registry import Registry

from .price_checks import CheckedFeed, SanityLimits
from .price_http import DEFAULT_TIMEOUT_S, http_get, json_body
from .prices import Clock, FixedPrice, PriceError, PriceQuote, TracePrice


class GpuRateFeed(Protocol):
    """The market (or contract) value of one GPU of ``gpu_model`` for an hour, in USD."""

    name: str
    gpu_model: str

    async def latest(self) -> PriceQuote: ...


class FixedGpuRate(FixedPrice):
    """A contract rate: the same $/GPU-hour whatever the market does."""

    def __init__(self, gpu_model: str, value: float, *, clock: Clock = time.monotonic) -> None:
        super().__init__(value, clock=clock, name=f"gpu-rate:{gpu_model}:fixed")
        self.gpu_model = gpu_model


class TraceGpuRate(TracePrice):
    """A ``timestamp,value`` CSV of $/GPU-hour replayed against the clock (demo, back-tests)."""

    def __init__(
        self, gpu_model: str, path: Path, *, clock: Clock = time.monotonic, speedup: float = 1.0, loop: bool = True
    ) -> None:
        super().__init__(path, clock=clock, speedup=speedup, loop=loop)
        self.name = f"gpu-rate:{gpu_model}:trace:{path.name}"
        self.gpu_model = gpu_model


class VastMarketRate:
    """The median $/GPU-hour of the marketplace's offers for one GPU, filtered for reliability.

    The filter goes to the server in ``q`` and is applied again here: a marketplace that ignores
    part of a query must not put unreliable or unrentable offers into the price.
    """

    PATH = "/api/v0/bundles/"

    def __init__(
        self,
        base_url: str,
        gpu_name: str,
        *,
        gpu_model: str | None = None,
        min_reliability: float = 0.98,
        num_gpus: int | None = None,
        verified_only: bool = True,
        offer_type: str = "on-demand",
        min_offers: int = 3,
        clock: Clock = time.monotonic,
        client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not 0 <= min_reliability <= 1:
            raise ValueError(f"min_reliability {min_reliability} must be within 0..1")
        if min_offers < 1 or (num_gpus is not None and num_gpus < 1):
            raise ValueError(f"min_offers {min_offers} and num_gpus {num_gpus} must be >= 1")
        self.gpu_model = gpu_model or gpu_name
        self.name = f"gpu-rate:{self.gpu_model}:vast"
        self.gpu_name = gpu_name
        self.min_reliability = min_reliability
        self.num_gpus = num_gpus
        self.verified_only = verified_only
        self.offer_type = offer_type
        self.min_offers = min_offers
        self._url = base_url.rstrip("/") + self.PATH
        self._clock = clock
        self._client = client
        self._timeout = timeout
        self.last_offers = 0  # how many offers made the last median

    def query(self) -> dict[str, Any]:
        q: dict[str, Any] = {
            "gpu_name": {"eq": self.gpu_name},
            "rentable": {"eq": True},
            "reliability2": {"gte": self.min_reliability},
            "type": self.offer_type,
        }
        if self.verified_only:
            q["verified"] = {"eq": True}
        if self.num_gpus is not None:
            q["num_gpus"] = {"eq": self.num_gpus}
        return q

    async def latest(self) -> PriceQuote:
        response = await http_get(self.name, self._url, client=self._client, timeout=self._timeout,
                                  params={"q": json.dumps(self.query(), separators=(",", ":"))})
        data = json_body(self.name, response)
        offers = data.get("offers") if isinstance(data, dict) else None
        if not isinstance(offers, list):
            raise PriceError(f"{self.name}: expected {{'offers': [...]}}, got {str(data)[:80]!r}")
        rates = [rate for offer in offers if (rate := self._per_gpu(offer)) is not None]
        self.last_offers = len(rates)
        if len(rates) < self.min_offers:
            raise PriceError(f"{self.name}: {len(rates)} of {len(offers)} offers pass the filter "
                             f"(gpu_name {self.gpu_name!r}, reliability >= {self.min_reliability}); "
                             f"need {self.min_offers} for a market price")
        return PriceQuote(statistics.median(rates), self._clock(), self.name)

    def _per_gpu(self, offer: Any) -> float | None:
        """The offer's $/GPU-hour, or None if it does not pass the filter or makes no sense."""
        if not isinstance(offer, dict):
            return None
        reliability = _float(offer.get("reliability2", offer.get("reliability")))
        gpus = offer.get("num_gpus")
        dph = _float(offer.get("dph_total"))
        wanted = (
            str(offer.get("gpu_name", "")).strip().lower() == self.gpu_name.strip().lower()
            and offer.get("rentable", True) is True
            and (not self.verified_only or offer.get("verified", True) is True)
            and reliability is not None and reliability >= self.min_reliability
            and isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 1
            and (self.num_gpus is None or gpus == self.num_gpus)
            and dph is not None and dph > 0
        )
        return dph / gpus if wanted and dph is not None and isinstance(gpus, int) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class CheckedGpuRate(CheckedFeed):
    """A rate feed behind the sanity rules; still a :class:`GpuRateFeed`."""

    def __init__(self, inner: GpuRateFeed, limits: SanityLimits) -> None:
        super().__init__(inner, limits)
        self.gpu_model = inner.gpu_model


GpuRateFactory = Callable[..., GpuRateFeed]


def gpu_rate_sources() -> Registry[GpuRateFactory]:
    registry: Registry[GpuRateFactory] = Registry("GPU rate source")
    registry.register("fixed")(FixedGpuRate)
    registry.register("trace")(TraceGpuRate)
    registry.register("vast")(VastMarketRate)
    return registry
