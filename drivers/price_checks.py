"""Sanity checks shared by every price feed, and the wrapper that holds the last good quote.

A wrong price is worse than a missing one: a missing price goes stale and the controller holds
(DESIGN.md invariant 4), but a wrong one moves megawatts. So every quote passes a few rules
before anyone sees it. The rules, with their stable names (logs and dashboards use them):

- ``not_finite``: NaN or infinity;
- ``negative``: below zero where the band does not allow it;
- ``below_range`` / ``above_range``: outside the plausible band of the quantity, which is what
  a wrong unit looks like ($/TH/day is 1,000 times smaller than $/PH/day; $/kWh 1,000 times
  smaller than $/MWh);
- ``jump``: more than ``max_jump_factor`` times (or less than 1/factor of) the last good value
  within ``jump_window_seconds`` of it. After the window a new level is believed: a feed that
  moved for real must not be refused for ever.

A rejected quote is logged with the source, the value and the rule; :class:`CheckedFeed` then
returns the last good quote unchanged (same ``at``), so its age grows and the controller marks it
stale in due course. With no good quote yet it raises :class:`PriceRejected`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

from .prices import PriceError, PriceFeed, PriceQuote, published_price

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SanityLimits:
    """The plausible band of one quantity and how fast it may move."""

    unit: str  # for messages: "$/PH/day", "$/MWh", "$/GPU-hour"
    minimum: float
    maximum: float
    max_jump_factor: float | None = None  # None: no jump rule (real-time power spikes are real)
    jump_window_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.minimum) and math.isfinite(self.maximum)) or self.minimum >= self.maximum:
            raise ValueError(f"sanity band [{self.minimum}, {self.maximum}] {self.unit}: minimum must be below maximum")
        if self.max_jump_factor is not None and not self.max_jump_factor > 1:
            raise ValueError(f"max_jump_factor {self.max_jump_factor} must be above 1")


# Defaults per quantity; the site file may override them (daemon/price_config.py).
HASHPRICE_LIMITS = SanityLimits("$/PH/day", minimum=1.0, maximum=5000.0, max_jump_factor=2.0)
# Wholesale power goes negative (ERCOT West often does, down to its -$250 floor; some markets
# clear lower): a negative price is real, and mining through it is paid.
POWER_LIMITS = SanityLimits("$/MWh", minimum=-1000.0, maximum=20000.0, max_jump_factor=None)
GPU_RATE_LIMITS = SanityLimits("$/GPU-hour", minimum=0.05, maximum=50.0, max_jump_factor=3.0)


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    value: float
    rule: str  # stable: not_finite, negative, below_range, above_range, jump
    detail: str

    def __str__(self) -> str:
        return f"{self.source}: rejected {self.value!r}: {self.rule}: {self.detail}"


class PriceRejected(PriceError):
    """A quote failed a sanity rule and there is no earlier good quote to hold."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


def check_quote(quote: PriceQuote, limits: SanityLimits, last_good: PriceQuote | None) -> Rejection | None:
    """The first rule ``quote`` breaks, or None. Pure: no clock, no state."""
    value, unit = quote.value, limits.unit

    def reject(rule: str, detail: str) -> Rejection:
        return Rejection(quote.source, value, rule, detail)

    if not math.isfinite(value):
        return reject("not_finite", "not a number")
    if value < 0 <= limits.minimum:
        return reject("negative", f"a price below zero (minimum {limits.minimum:g} {unit})")
    if value < limits.minimum:
        return reject("below_range", f"below {limits.minimum:g} {unit}: a wrong unit?")
    if value > limits.maximum:
        return reject("above_range", f"above {limits.maximum:g} {unit}: a wrong unit?")
    factor = limits.max_jump_factor
    if factor is None or last_good is None or value <= 0 or last_good.value <= 0:
        return None  # ratios mean nothing across zero (negative power prices)
    age = quote.at - last_good.at
    ratio = max(value / last_good.value, last_good.value / value)
    if age <= limits.jump_window_seconds and ratio > factor:
        return reject("jump", f"{ratio:.3g}x the last good {last_good.value:g} {unit} from {age:.0f} s "
                              f"before (at most {factor:g}x within {limits.jump_window_seconds:g} s)")
    return None


class CheckedFeed:
    """Any :class:`PriceFeed` behind the sanity rules, holding its last good quote."""

    def __init__(self, inner: PriceFeed, limits: SanityLimits) -> None:
        self.inner = inner
        self.name = inner.name
        self.limits = limits
        self.last_good: PriceQuote | None = None
        self.last_rejection: Rejection | None = None

    def published_at(self, at: datetime) -> float | None:
        """The inner feed's published price at ``at`` (a tariff's), if it publishes any."""
        inner = published_price(self.inner)
        return inner(at) if inner is not None else None

    async def latest(self) -> PriceQuote:
        quote = await self.inner.latest()  # a PriceError (no answer, garbage) goes up as it is
        rejection = check_quote(quote, self.limits, self.last_good)
        if rejection is None:
            if self.last_rejection is not None:
                log.info("%s: %r %s accepted again", self.name, quote.value, self.limits.unit)
            self.last_good, self.last_rejection = quote, None
            return quote
        # Warn when a run of rejections starts or changes rule, not on every tick of it.
        level = logging.DEBUG if self.last_rejection and self.last_rejection.rule == rejection.rule else logging.WARNING
        self.last_rejection = rejection
        if self.last_good is None:
            log.log(level, "%s; no good value to hold", rejection)
            raise PriceRejected(rejection)
        log.log(level, "%s; holding the last good %r %s", rejection, self.last_good.value, self.limits.unit)
        return self.last_good
