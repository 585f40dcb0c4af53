"""The price of power: a time-of-use tariff (boundaries, time zones, DST, a checked week) and a
real-time price over HTTP in JSON or CSV, converted to $/MWh."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from httpstub import HttpStub, Reply

from wattshift.drivers.power_prices import (
    RealTimePrice,
    TimeOfUsePrice,
    TouPeriod,
    TouSchedule,
    parse_clock,
    parse_days,
)
from wattshift.drivers.prices import PriceError


def period(name: str, days: str, start: str, end: str, price: float) -> TouPeriod:
    return TouPeriod(name, parse_days(days.split(",")), parse_clock(start), parse_clock(end, end=True), price)


# A Texas-style tariff: weekday afternoon peak, cheap nights (past midnight), flat weekends.
TARIFF = [
    period("peak", "mon-fri", "14:00", "19:00", 95.0),
    period("day", "mon-fri", "06:00", "14:00", 45.0),
    period("evening", "mon-fri", "19:00", "22:00", 45.0),
    period("night", "daily", "22:00", "06:00", 22.0),
    period("weekend", "sat-sun", "06:00", "22:00", 30.0),
]


def feed_at(wall: datetime, zone: str = "America/Chicago") -> TimeOfUsePrice:
    return TimeOfUsePrice(TouSchedule(TARIFF), zone, clock=lambda: 7.0, wall=lambda: wall)


@pytest.mark.parametrize(("local", "period_name", "price"), [
    ("2025-07-14T13:59", "day", 45.0),  # a Monday
    ("2025-07-14T14:00", "peak", 95.0),
    ("2025-07-14T18:59", "peak", 95.0),
    ("2025-07-14T19:00", "evening", 45.0),
    ("2025-07-14T22:00", "night", 22.0),
    ("2025-07-15T05:59", "night", 22.0),
    ("2025-07-15T06:00", "day", 45.0),
    ("2025-07-19T05:59", "night", 22.0),  # Friday's night runs into Saturday
    ("2025-07-19T14:30", "weekend", 30.0),  # no peak on a Saturday
    ("2025-07-14T00:00", "night", 22.0),  # Sunday's night runs into Monday
])
async def test_tariff_boundaries(local: str, period_name: str, price: float):
    wall = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("America/Chicago"))
    quote = await feed_at(wall.astimezone(UTC)).latest()
    assert (quote.value, quote.source, quote.at) == (price, f"time-of-use:{period_name}", 7.0)


@pytest.mark.parametrize(("utc", "zone", "price"), [
    ("2025-07-14T19:30:00+00:00", "America/Chicago", 95.0),  # 14:30 CDT
    ("2025-07-14T19:30:00+00:00", "Europe/Berlin", 45.0),  # 21:30 CEST: evening
    ("2025-07-14T19:30:00+00:00", "Asia/Tokyo", 22.0),  # 04:30 on Tuesday: night
    ("2025-10-27T19:00:00+00:00", "America/Chicago", 95.0),  # 14:00 CDT
    ("2025-11-03T19:00:00+00:00", "America/Chicago", 45.0),  # 13:00 CST: DST ended on Nov 2
    ("2025-11-03T20:00:00+00:00", "America/Chicago", 95.0),  # 14:00 CST
])
async def test_the_tariff_runs_on_its_own_time_zone_through_dst(utc: str, zone: str, price: float):
    assert (await feed_at(datetime.fromisoformat(utc), zone).latest()).value == price


def test_gaps_and_overlaps_are_named():
    with pytest.raises(ValueError) as caught:
        TouSchedule([
            period("peak", "mon-fri", "14:00", "19:00", 95.0),
            period("off", "mon-fri", "19:00", "15:00", 40.0),  # runs into the next afternoon's peak
            period("weekend", "sat", "00:00", "24:00", 30.0),
        ])
    message = str(caught.value)
    assert "periods[0] 'peak' and periods[1] 'off' overlap on Tue 14:00-15:00, Wed 14:00-15:00" in message
    assert "periods[1] 'off' and periods[2] 'weekend' overlap on Sat 00:00-15:00" in message
    assert "no period covers Mon 00:00-14:00, Sun 00:00-24:00" in message


@pytest.mark.parametrize(("call", "message"), [
    (lambda: parse_days(["funday"]), "day 'funday': expected mon..sun"),
    (lambda: parse_clock("25:00"), "time '25:00': expected 00:00 to 23:59"),
    (lambda: parse_clock("24:00"), "time '24:00'"),
    (lambda: parse_clock("7pm"), "time '7pm': expected HH:MM"),
    (lambda: TouSchedule([]), "at least one period"),
])
def test_bad_tariff_parts_are_refused(call, message: str):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_day_ranges_wrap_the_weekend():
    assert parse_days(["fri-mon"]) == {4, 5, 6, 0}
    assert parse_days(["daily"]) == set(range(7))
    assert parse_clock("24:00", end=True) == 1440


# -- real time over HTTP --------------------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


LMP_JSON = {
    "market": "RTM", "settlementPoint": "HB_NORTH",
    "data": [
        {"intervalEnding": "2025-07-14T14:45:00-05:00", "lmp": 31.5},
        {"intervalEnding": "2025-07-14T14:50:00-05:00", "lmp": 42.1},
    ],
}
LMP_CSV = (
    "DeliveryDate,DeliveryHour,DeliveryInterval,SettlementPointName,SettlementPointType,SettlementPointPrice\n"
    "07/14/2025,15,1,HB_NORTH,HU,31.50\n"
    "07/14/2025,15,2,HB_NORTH,HU,42.10\n"
    "\n"
)


@pytest.mark.parametrize(("unit", "scale"), [("usd_per_mwh", 1), ("usd_per_kwh", 1e-3), ("cents_per_kwh", 0.1)])
async def test_json_price_in_any_unit_comes_out_in_usd_per_mwh(stub: HttpStub, unit: str, scale: float):
    body = {"data": [{**p, "lmp": p["lmp"] * scale} for p in LMP_JSON["data"]]}  # type: ignore[union-attr]
    stub.route("/rt", Reply(body))
    feed = RealTimePrice(stub.url + "/rt", field="data.-1.lmp", unit=unit, clock=lambda: 3.0)  # type: ignore[arg-type]
    quote = await feed.latest()
    assert quote.value == pytest.approx(42.1)
    assert (quote.at, quote.source) == (3.0, "http")


async def test_csv_price_is_the_last_row_of_its_column(stub: HttpStub):
    stub.route("/rt.csv", Reply(LMP_CSV, content_type="text/csv"))
    feed = RealTimePrice(stub.url + "/rt.csv", format="csv", column="SettlementPointPrice")
    assert (await feed.latest()).value == pytest.approx(42.1)


@pytest.mark.parametrize(("path", "reply", "kwargs", "message"), [
    ("/rt", Reply({"data": []}), {"field": "data.-1.lmp"}, "http: no 'data.-1.lmp' in the answer"),
    ("/rt", Reply({"data": [{"lmp": "n/a"}]}), {"field": "data.-1.lmp"}, "data.-1.lmp is 'n/a', not a number"),
    ("/rt", Reply("Service Unavailable", status=503), {"field": "lmp"}, "http: HTTP 503 from .*/rt: Service"),
    ("/rt", Reply("<html>", content_type="text/html"), {"field": "lmp"}, "http: not JSON"),
    ("/rt", Reply(hang=True), {"field": "lmp"}, "http: no answer within 0.3 s"),
    ("/rt.csv", Reply(LMP_CSV), {"format": "csv", "column": "Price"},
     "no column 'Price' in the CSV \\(columns: DeliveryDate, DeliveryHour"),
    ("/rt.csv", Reply("a,b\n"), {"format": "csv", "column": "b"}, "no CSV rows"),
])
async def test_real_time_failures_name_the_source(stub: HttpStub, path: str, reply: Reply, kwargs: dict, message: str):  # type: ignore[type-arg]
    stub.route(path, reply)
    with pytest.raises(PriceError, match=message):
        await RealTimePrice(stub.url + path, timeout=0.3, **kwargs).latest()


def test_a_real_time_source_must_say_where_the_price_is():
    with pytest.raises(ValueError, match="needs 'field'"):
        RealTimePrice("http://127.0.20.1/x")
    with pytest.raises(ValueError, match="needs 'column'"):
        RealTimePrice("http://127.0.20.1/x", format="csv")
