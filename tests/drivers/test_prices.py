"""Price feeds: the hashprice formula, trace replay against a clock, and bad input refused."""

from pathlib import Path

import pytest

from wattshift.drivers.prices import (
    FixedPrice,
    PriceError,
    TracePrice,
    hashprice_usd_per_ph_day,
)


def test_hashprice_matches_the_worked_example_in_the_design_notes():
    # Difficulty 152e12, BTC $91,000, 3.125 subsidy + 0.02 fees -> about $37.9/PH/day.
    assert hashprice_usd_per_ph_day(152e12, 91_000, 3.145) == pytest.approx(37.9, abs=0.05)


async def test_a_trace_replays_against_the_clock_sped_up_and_looping(tmp_path: Path):
    path = tmp_path / "hp.csv"
    path.write_text("timestamp,value\n2025-01-01T00:00:00+00:00,50\n2025-01-01T01:00:00+00:00,40\n"
                    "2025-01-01T02:00:00+00:00,30\n")
    now = [100.0]
    feed = TracePrice(path, clock=lambda: now[0], speedup=60)  # an hour of trace per minute
    assert (await feed.latest()).value == 50
    now[0] += 61
    quote = await feed.latest()
    assert (quote.value, quote.at) == (40, 161.0)
    now[0] += 60  # two hours in: the trace's span, so it starts over
    assert (await feed.latest()).value == 50


@pytest.mark.parametrize(("text", "message"), [
    ("timestamp,value\n", "no rows"),
    ("0,5\nx,6\n", ":2: expected 'timestamp,value'"),
    ("0,5\n0,6\n", "timestamps must increase"),
])
def test_bad_traces_name_the_file_and_the_row(tmp_path: Path, text: str, message: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PriceError, match=message):
        TracePrice(path)


def test_a_negative_fixed_price_is_refused():
    with pytest.raises(PriceError, match="must be a finite number >= 0"):
        FixedPrice(-1.0)
