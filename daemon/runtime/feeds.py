"""Price feeds from the site file's ``prices`` section, each behind the sanity rules.

One function per kind turns a validated source into its driver; :func:`make_price_feeds` builds
the whole section at once. HTTP feeds share the daemon's ``httpx.AsyncClient`` when given one
(its owner closes it); without one each call opens its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
from pydantic import SecretStr

from wattshift.daemon.config.price import (
    FixedPrice,
    GpuRateSource,
    HashpriceSource,
    HttpPowerSource,
    LuxorSource,
    MempoolSource,
    PowerPriceSource,
    PricesConfig,
    TimeOfUseSource,
    TracePrice,
    VastSource,
)
from wattshift.drivers import prices as drv
from wattshift.drivers.gpu_rates import (
    CheckedGpuRate,
    FixedGpuRate,
    GpuRateFeed,
    TraceGpuRate,
    VastMarketRate,
)
from wattshift.drivers.hashprice_feeds import (
    LuxorHashprice,
    MempoolHashprice,
    TokenBucket,
)
from wattshift.drivers.power_prices import RealTimePrice, TimeOfUsePrice
from wattshift.drivers.price_checks import (
    GPU_RATE_LIMITS,
    HASHPRICE_LIMITS,
    POWER_LIMITS,
    CheckedFeed,
    SanityLimits,
)

Clock = Callable[[], float]
Wall = Callable[[], datetime]
DEFAULT_LIMITS = {"hashprice": HASHPRICE_LIMITS, "power": POWER_LIMITS}


class HasPassword(Protocol):
    """What a secrets entry must offer (config.Credentials does): the key as a ``SecretStr``."""

    @property
    def password(self) -> SecretStr: ...


class MissingSecret(ValueError):
    pass


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _resolve(base_dir: Path, file: Path) -> Path:
    return file if file.is_absolute() else base_dir / file


def _in_trace_time(limits: SanityLimits, source: object) -> SanityLimits:
    """A trace played ``speedup`` times faster moves that much faster on the loop clock: the jump
    window is meant in the trace's own time (a week of hashprice in a minute of demo is no jump)."""
    if isinstance(source, TracePrice) and source.speedup != 1:
        return replace(limits, jump_window_seconds=limits.jump_window_seconds / source.speedup)
    return limits


F = TypeVar("F")


def _trace(key: str, make: Callable[[Path], F], path: Path) -> F:
    """A trace feed, or a PriceError naming the key and the file (not a bare FileNotFoundError)."""
    try:
        return make(path)
    except OSError as err:
        raise drv.PriceError(f"{key}.file: cannot read {path}: {err.strerror}") from None


def make_price_feed(
    source: HashpriceSource | PowerPriceSource,
    name: str,
    base_dir: Path,
    clock: Clock,
    secrets: Mapping[str, HasPassword],
    *,
    limits: SanityLimits | None = None,
    client: httpx.AsyncClient | None = None,
    wall: Wall = _utc_now,
) -> drv.PriceFeed:
    """The driver for ``source``, wrapped in the sanity rules of ``name`` (hashprice, power)
    unless ``limits`` are given. Raises :class:`MissingSecret` or ``PriceError`` (a bad trace)."""
    if limits is None:
        if name not in DEFAULT_LIMITS:
            raise ValueError(f"no default sanity limits for price {name!r}: pass limits")
        limits = DEFAULT_LIMITS[name]
    feed: drv.PriceFeed
    match source:
        case FixedPrice():
            feed = drv.FixedPrice(source.value, clock=clock, name=f"{name}:fixed")
        case TracePrice():
            feed = _trace(f"prices.{name}", lambda path: drv.TracePrice(
                path, clock=clock, speedup=source.speedup, loop=source.loop), _resolve(base_dir, source.file))
        case MempoolSource():
            feed = MempoolHashprice(str(source.base_url), clock=clock, client=client, currency=source.currency,
                                    timeout=source.timeout_seconds, name=f"{name}:mempool")
        case LuxorSource():
            entry = secrets.get(source.api_key)
            if entry is None:
                raise MissingSecret(f"prices.{name}: api_key {source.api_key!r} is not in the secrets file")
            feed = LuxorHashprice(str(source.base_url), entry.password, clock=clock, wall=wall, client=client,
                                  timeout=source.timeout_seconds,
                                  bucket=TokenBucket(source.burst, source.refill_seconds, clock=clock),
                                  max_data_age_seconds=source.max_data_age_seconds, name=f"{name}:luxor")
        case TimeOfUseSource():
            feed = TimeOfUsePrice(source.schedule(), source.timezone, clock=clock, wall=wall,
                                  name=f"{name}:time-of-use")
        case HttpPowerSource():
            feed = RealTimePrice(str(source.url), format=source.format, field=source.field, column=source.column,
                                 unit=source.unit, clock=clock, client=client, timeout=source.timeout_seconds,
                                 name=f"{name}:http")
        case _:
            raise TypeError(f"prices.{name}: no driver for {type(source).__name__}")
    return CheckedFeed(feed, _in_trace_time(limits, source))


def make_gpu_rate_feed(
    source: GpuRateSource,
    gpu_model: str,
    base_dir: Path,
    clock: Clock,
    *,
    limits: SanityLimits = GPU_RATE_LIMITS,
    client: httpx.AsyncClient | None = None,
) -> GpuRateFeed:
    feed: GpuRateFeed
    match source:
        case FixedPrice():
            feed = FixedGpuRate(gpu_model, source.value, clock=clock)
        case TracePrice():
            feed = _trace(f"prices.gpu_rates_usd_per_gpu_hour.{gpu_model}",
                          lambda path: TraceGpuRate(gpu_model, path, clock=clock, speedup=source.speedup,
                                                    loop=source.loop),
                          _resolve(base_dir, source.file))
        case VastSource():
            feed = VastMarketRate(str(source.base_url), source.gpu_name, gpu_model=gpu_model,
                                  min_reliability=source.min_reliability, num_gpus=source.num_gpus,
                                  verified_only=source.verified_only, offer_type=source.offer_type,
                                  min_offers=source.min_offers, clock=clock, client=client,
                                  timeout=source.timeout_seconds)
        case _:
            raise TypeError(f"prices.gpu_rates_usd_per_gpu_hour.{gpu_model}: no driver for {type(source).__name__}")
    return CheckedGpuRate(feed, _in_trace_time(limits, source))


@dataclass
class PriceFeeds:
    hashprice: drv.PriceFeed
    power: drv.PriceFeed
    gpu_rates: dict[str, GpuRateFeed] = field(default_factory=dict)  # by GPU model


def make_price_feeds(
    prices: PricesConfig,
    base_dir: Path,
    clock: Clock,
    secrets: Mapping[str, HasPassword],
    *,
    client: httpx.AsyncClient | None = None,
    wall: Wall = _utc_now,
) -> PriceFeeds:
    """Every feed of the ``prices`` section, with the section's sanity thresholds."""
    sanity = prices.sanity
    return PriceFeeds(
        hashprice=make_price_feed(prices.hashprice_usd_per_ph_day, "hashprice", base_dir, clock, secrets,
                                  limits=sanity.hashprice.limits(HASHPRICE_LIMITS.unit), client=client, wall=wall),
        power=make_price_feed(prices.power_usd_per_mwh, "power", base_dir, clock, secrets,
                              limits=sanity.power.limits(POWER_LIMITS.unit), client=client, wall=wall),
        gpu_rates={
            model: make_gpu_rate_feed(source, model, base_dir, clock,
                                      limits=sanity.gpu_rate.limits(GPU_RATE_LIMITS.unit), client=client)
            for model, source in prices.gpu_rates_usd_per_gpu_hour.items()
        },
    )
