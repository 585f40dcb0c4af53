"""Sanity rules: each rejects with the source, value and rule named, and the last good quote is
held with its age growing until the controller calls it stale."""

from __future__ import annotations

import logging
import math

import pytest

from wattshift.daemon.control.observe import quote_prices
from wattshift.drivers.price_checks import (
    HASHPRICE_LIMITS,
    POWER_LIMITS,
    CheckedFeed,
    PriceRejected,
    SanityLimits,
    check_quote,
)
from wattshift.drivers.prices import PriceError, PriceQuote


class Scripted:
    """A feed that says what the test tells it to, at the test's clock."""

    name = "scripted"

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.next: float | Exception = 0.0

    async def latest(self) -> PriceQuote:
        if isinstance(self.next, Exception):
            raise self.next
        return PriceQuote(self.next, self.clock[0], self.name)


def q(value: float, at: float = 0.0) -> PriceQuote:
    return PriceQuote(value, at, "src")


@pytest.mark.parametrize(("value", "limits", "last", "rule"), [
    (math.nan, HASHPRICE_LIMITS, None, "not_finite"),
    (math.inf, HASHPRICE_LIMITS, None, "not_finite"),
    (-3.0, HASHPRICE_LIMITS, None, "negative"),
    (-3.0, SanityLimits("$/MWh", 0, 9000), None, "negative"),  # a site that set power.minimum: 0
    (-1500.0, POWER_LIMITS, None, "below_range"),  # below any market's floor
    (0.045, HASHPRICE_LIMITS, None, "below_range"),  # $/TH/day where $/PH/day belongs
    (45_000.0, HASHPRICE_LIMITS, None, "above_range"),  # $/EH/day
    (40_000.0, POWER_LIMITS, None, "above_range"),  # $/kWh taken for $/MWh the other way round
    (95.0, HASHPRICE_LIMITS, q(45.0), "jump"),
    (20.0, HASHPRICE_LIMITS, q(45.0), "jump"),
])
def test_each_rule_rejects_by_name(value: float, limits: SanityLimits, last: PriceQuote | None, rule: str):
    rejection = check_quote(q(value, at=60), limits, last)
    assert rejection is not None and rejection.rule == rule
    assert str(rejection).startswith(f"src: rejected {value!r}: {rule}: ")


@pytest.mark.parametrize(("value", "limits", "last"), [
    (45.0, HASHPRICE_LIMITS, None),
    (85.0, HASHPRICE_LIMITS, q(45.0)),  # under 2x
    (95.0, HASHPRICE_LIMITS, q(45.0, at=-3600)),  # 2x, but an hour after the last good value
    (4_000.0, POWER_LIMITS, q(30.0)),  # a real-time spike: power has no jump rule by default
    (-20.0, SanityLimits("$/MWh", -250, 9000, max_jump_factor=5), q(30.0)),  # negative prices allowed
    (0.0, POWER_LIMITS, None),
    (-35.0, POWER_LIMITS, None),  # negative nodal prices are real, and accepted by default
])
def test_plausible_values_pass(value: float, limits: SanityLimits, last: PriceQuote | None):
    assert check_quote(q(value, at=60), limits, last) is None


def test_limits_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="minimum must be below maximum"):
        SanityLimits("$/MWh", 10, 10)
    with pytest.raises(ValueError, match="max_jump_factor 1 must be above 1"):
        SanityLimits("$/MWh", 0, 10, max_jump_factor=1)


@pytest.mark.parametrize(("bad_value", "rule"), [
    (-1.0, "negative"), (math.nan, "not_finite"), (0.0452, "below_range"), (45_200.0, "above_range"), (120.0, "jump"),
])
async def test_a_rejected_value_holds_the_last_good_quote_and_it_ages(
    bad_value: float, rule: str, caplog: pytest.LogCaptureFixture
):
    clock = [1000.0]
    inner = Scripted(clock)
    feed = CheckedFeed(inner, HASHPRICE_LIMITS)
    inner.next = 45.2
    good = await feed.latest()
    inner.next = bad_value
    for step in range(1, 5):
        clock[0] += 300
        with caplog.at_level(logging.WARNING):
            held = await feed.latest()
        assert held == good  # same value, same `at`: its age grows
        assert feed.last_rejection is not None and feed.last_rejection.rule == rule
        prices = quote_prices((held.value, held.at), (40.0, clock[0]), clock=clock[0], stale_after=900)
        assert prices.hashprice_stale is (step * 300 > 900)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once when the run of rejections starts, not every tick
    assert warnings[0].startswith(f"scripted: rejected {bad_value!r}: {rule}:")
    assert warnings[0].endswith("holding the last good 45.2 $/PH/day")


async def test_with_nothing_to_hold_a_rejection_is_a_price_error():
    clock = [0.0]
    inner = Scripted(clock)
    inner.next = -5.0
    feed = CheckedFeed(inner, HASHPRICE_LIMITS)
    with pytest.raises(PriceRejected, match="scripted: rejected -5.0: negative") as caught:
        await feed.latest()
    assert isinstance(caught.value, PriceError) and caught.value.rejection.rule == "negative"


async def test_a_new_level_is_believed_once_the_jump_window_has_passed():
    clock = [0.0]
    inner = Scripted(clock)
    feed = CheckedFeed(inner, SanityLimits("$/PH/day", 1, 5000, max_jump_factor=2, jump_window_seconds=1800))
    inner.next = 40.0
    await feed.latest()
    inner.next = 90.0
    clock[0] = 1800
    assert (await feed.latest()).value == 40.0
    clock[0] = 1801
    assert (await feed.latest()).value == 90.0
    assert feed.last_rejection is None


async def test_feed_errors_pass_through_untouched():
    clock = [0.0]
    inner = Scripted(clock)
    inner.next = PriceError("scripted: HTTP 500")
    with pytest.raises(PriceError, match="scripted: HTTP 500"):
        await CheckedFeed(inner, HASHPRICE_LIMITS).latest()
