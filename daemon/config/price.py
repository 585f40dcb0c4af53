"""The ``prices`` section of the site file: one source per price, and the sanity thresholds.

Each price names its ``source`` (a discriminated union, so a typo or a source that does not fit
the quantity is refused by name): hashprice from ``fixed``, ``trace``, ``mempool`` or ``luxor``;
the power price from ``fixed``, ``trace``, ``time_of_use`` or ``http``; a GPU rental rate per
GPU model from ``fixed``, ``trace`` or ``vast``. API keys never live here: ``luxor.api_key`` names
an entry of the secrets file, whose ``password`` is the key.

Field names and defaults of ``fixed``, ``trace`` and the section itself are those of the first
site files, which stay valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

from wattshift.drivers.power_prices import (
    TouPeriod,
    TouSchedule,
    parse_clock,
    parse_days,
)
from wattshift.drivers.price_checks import (
    GPU_RATE_LIMITS,
    HASHPRICE_LIMITS,
    POWER_LIMITS,
    SanityLimits,
)
from wattshift.model.fields import Strict, one_or_many

Timeout = Annotated[float, Field(gt=0, le=60)]


class FixedPrice(Strict):
    source: Literal["fixed"] = "fixed"
    value: float = Field(ge=0)


class TracePrice(Strict):
    """A CSV of ``timestamp,value`` replayed against the clock (demo, back-tests)."""

    source: Literal["trace"]
    file: Path
    loop: bool = True
    speedup: float = Field(default=1.0, gt=0, le=1e9)


class MempoolSource(Strict):
    """Hashprice computed from a mempool.space-style API (DESIGN.md §4); no key needed."""

    source: Literal["mempool"]
    base_url: HttpUrl = HttpUrl("https://mempool.space")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    timeout_seconds: Timeout = 5.0


class LuxorSource(Strict):
    """Luxor's Hashrate Index; ``api_key`` is the name of a secrets-file entry, not the key."""

    source: Literal["luxor"]
    base_url: HttpUrl = HttpUrl("https://api.hashrateindex.com")
    api_key: str = Field(min_length=1)
    burst: int = Field(default=20, ge=1, le=1000)  # the API's published limit: 20, then 1 per 15 s
    refill_seconds: float = Field(default=15.0, gt=0, le=86400)
    max_data_age_seconds: float = Field(default=6 * 3600, gt=0)
    timeout_seconds: Timeout = 5.0


class TouPeriodConfig(Strict):
    """``{name: peak, days: mon-fri, start: "14:00", end: "19:00", usd_per_mwh: 95}``."""

    name: str = Field(min_length=1, max_length=40)
    days: list[str] = Field(min_length=1)
    start: str
    end: str
    usd_per_mwh: float

    @field_validator("days", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return one_or_many(value)

    @field_validator("days")
    @classmethod
    def _known_days(cls, value: list[str]) -> list[str]:
        parse_days(value)
        return value

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        parse_clock(value)
        return value

    @field_validator("end")
    @classmethod
    def _end(cls, value: str) -> str:
        parse_clock(value, end=True)
        return value

    def period(self) -> TouPeriod:
        return TouPeriod(self.name, parse_days(self.days), parse_clock(self.start),
                         parse_clock(self.end, end=True), self.usd_per_mwh)


class TimeOfUseSource(Strict):
    """A tariff: periods that cover the week exactly once, in the utility's time zone."""

    source: Literal["time_of_use"]
    timezone: str
    periods: list[TouPeriodConfig] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as America/Chicago)") from None
        return value

    @model_validator(mode="after")
    def _covers_the_week(self) -> TimeOfUseSource:
        self.schedule()  # raises ValueError naming each gap and overlap
        return self

    def schedule(self) -> TouSchedule:
        return TouSchedule([p.period() for p in self.periods])


class HttpPowerSource(Strict):
    """A real-time price over HTTP: JSON with a dotted ``field``, or CSV with a ``column``."""

    source: Literal["http"]
    url: HttpUrl
    format: Literal["json", "csv"] = "json"
    field: str | None = None  # JSON: data.-1.price is the last item's price
    column: str | None = None  # CSV: the header of the price column; the last row is read
    unit: Literal["usd_per_mwh", "usd_per_kwh", "cents_per_kwh"] = "usd_per_mwh"
    timeout_seconds: Timeout = 5.0

    @model_validator(mode="after")
    def _where_the_price_is(self) -> HttpPowerSource:
        if self.format == "json" and not self.field:
            raise ValueError("format json needs 'field', the dotted path of the price (for example data.-1.price)")
        if self.format == "csv" and not self.column:
            raise ValueError("format csv needs 'column', the header of the price column")
        return self


class VastSource(Strict):
    """The median $/GPU-hour of a Vast.ai-style marketplace's offers for ``gpu_name``."""

    source: Literal["vast"]
    base_url: HttpUrl = HttpUrl("https://console.vast.ai")
    gpu_name: str = Field(min_length=1)  # as the marketplace spells it: "H100 SXM", "RTX 4090"
    min_reliability: float = Field(default=0.98, ge=0, le=1)
    num_gpus: int | None = Field(default=None, ge=1, le=64)  # only offers of exactly this size
    verified_only: bool = True
    offer_type: Literal["on-demand", "bid"] = "on-demand"
    min_offers: int = Field(default=3, ge=1)
    timeout_seconds: Timeout = 5.0


HashpriceSource = Annotated[FixedPrice | TracePrice | MempoolSource | LuxorSource, Field(discriminator="source")]
PowerPriceSource = Annotated[FixedPrice | TracePrice | TimeOfUseSource | HttpPowerSource,
                             Field(discriminator="source")]
GpuRateSource = Annotated[FixedPrice | TracePrice | VastSource, Field(discriminator="source")]
# Also a Prometheus label value: bounded, printable.
GpuModel = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")]


class SanityRule(Strict):
    """The plausible band of one quantity and the largest believable move (price_checks.py)."""

    minimum: float
    maximum: float
    max_jump_factor: float | None = Field(default=None, gt=1)
    jump_window_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> SanityRule:
        if self.minimum >= self.maximum:
            raise ValueError(f"minimum ({self.minimum}) must be below maximum ({self.maximum})")
        return self

    @classmethod
    def of(cls, limits: SanityLimits) -> SanityRule:
        return cls(minimum=limits.minimum, maximum=limits.maximum,
                   max_jump_factor=limits.max_jump_factor, jump_window_seconds=limits.jump_window_seconds)

    def limits(self, unit: str) -> SanityLimits:
        return SanityLimits(unit, self.minimum, self.maximum, self.max_jump_factor, self.jump_window_seconds)


class SanityConfig(Strict):
    # Power has no jump rule by default: real-time prices really do go from $30 to $3,000.
    # Power may go negative (nodal prices do); a site that never sees it may raise power.minimum to 0.
    hashprice: SanityRule = SanityRule.of(HASHPRICE_LIMITS)
    power: SanityRule = SanityRule.of(POWER_LIMITS)
    gpu_rate: SanityRule = SanityRule.of(GPU_RATE_LIMITS)


class PricesConfig(Strict):
    hashprice_usd_per_ph_day: HashpriceSource = FixedPrice(value=45.0)
    power_usd_per_mwh: PowerPriceSource = FixedPrice(value=40.0)
    gpu_rates_usd_per_gpu_hour: dict[GpuModel, GpuRateSource] = Field(default_factory=dict)
    stale_after_seconds: float = Field(default=900, gt=0)
    sanity: SanityConfig = SanityConfig()

    @model_validator(mode="after")
    def _set_values_within_their_band(self) -> PricesConfig:
        """A fixed price or tariff the sanity rules would refuse at every tick is a mistake in the
        file (a wrong unit, most likely): say so now, not as a stale price at run time."""
        checks: list[tuple[str, Any, SanityRule, str]] = [
            ("hashprice_usd_per_ph_day", self.hashprice_usd_per_ph_day, self.sanity.hashprice, "hashprice"),
            ("power_usd_per_mwh", self.power_usd_per_mwh, self.sanity.power, "power"),
        ]
        checks += [(f"gpu_rates_usd_per_gpu_hour.{m}", s, self.sanity.gpu_rate, "gpu_rate")
                   for m, s in self.gpu_rates_usd_per_gpu_hour.items()]
        for key, source, rule, name in checks:
            values = [("value", source.value)] if isinstance(source, FixedPrice) else []
            if isinstance(source, TimeOfUseSource):
                values = [(f"periods[{i}].usd_per_mwh", p.usd_per_mwh) for i, p in enumerate(source.periods)]
            for where, value in values:
                if not rule.minimum <= value <= rule.maximum:
                    raise ValueError(f"{key}.{where} {value:g} is outside [{rule.minimum:g}, {rule.maximum:g}] "
                                     f"(sanity.{name}): a wrong unit?")
        return self

    def secret_names(self) -> dict[str, str]:
        """Secrets-file entries this section needs, by the key that names them."""
        needed: dict[str, str] = {}
        if isinstance(self.hashprice_usd_per_ph_day, LuxorSource):
            needed["prices.hashprice_usd_per_ph_day.api_key"] = self.hashprice_usd_per_ph_day.api_key
        return needed

    def trace_files(self) -> dict[str, Path]:
        """Every trace file named, by key: for ``validate`` to check they exist."""
        sources: dict[str, Any] = {"hashprice_usd_per_ph_day": self.hashprice_usd_per_ph_day,
                                   "power_usd_per_mwh": self.power_usd_per_mwh}
        sources |= {f"gpu_rates_usd_per_gpu_hour.{m}": s for m, s in self.gpu_rates_usd_per_gpu_hour.items()}
        return {f"prices.{key}.file": s.file for key, s in sources.items() if isinstance(s, TracePrice)}
