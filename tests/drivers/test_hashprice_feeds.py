"""Hashprice over HTTP: mempool.space-style and Luxor's Hashrate Index, against a local server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from httpstub import HttpStub, Reply
from price_payloads import (
    WORKED_HASHPRICE,
    luxor_hashprice,
    mempool_hashrate_3d,
    mempool_prices,
    mempool_reward_stats,
)
from pydantic import SecretStr

from wattshift.drivers.catalog import price_sources
from wattshift.drivers.hashprice_feeds import (
    LuxorHashprice,
    MempoolHashprice,
    TokenBucket,
)
from wattshift.drivers.prices import PriceError

KEY = "hi-live-7f3c9a1e0b5d42c8a6e1"  # a made-up key; the test checks it never shows


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


def serve_mempool(stub: HttpStub, **overrides: Reply) -> None:
    stub.route("/api/v1/mining/hashrate/3d", overrides.get("hashrate", Reply(mempool_hashrate_3d())))
    stub.route("/api/v1/mining/reward-stats/144", overrides.get("rewards", Reply(mempool_reward_stats())))
    stub.route("/api/v1/prices", overrides.get("prices", Reply(mempool_prices())))


async def test_mempool_gives_the_worked_example_of_the_design_notes(stub: HttpStub):
    serve_mempool(stub)
    now = [500.0]
    feed = MempoolHashprice(stub.url, clock=lambda: now[0])
    quote = await feed.latest()
    assert quote.value == pytest.approx(WORKED_HASHPRICE, abs=0.05)
    assert (quote.at, quote.source) == (500.0, "mempool")
    assert {s.path for s in stub.seen} == {"/api/v1/mining/hashrate/3d", "/api/v1/mining/reward-stats/144",
                                           "/api/v1/prices"}


async def test_mempool_follows_the_btc_price_and_difficulty(stub: HttpStub):
    serve_mempool(stub, prices=Reply(mempool_prices(btc_usd=182_000)),
                  hashrate=Reply(mempool_hashrate_3d(difficulty=304e12)))
    quote = await MempoolHashprice(stub.url).latest()
    assert quote.value == pytest.approx(WORKED_HASHPRICE, abs=0.05)  # twice the price, twice the work


async def test_mempool_through_a_shared_client(stub: HttpStub):
    serve_mempool(stub)
    async with httpx.AsyncClient() as client:
        quote = await MempoolHashprice(stub.url, client=client).latest()
    assert quote.value == pytest.approx(WORKED_HASHPRICE, abs=0.05)


@pytest.mark.parametrize(("override", "message"), [
    ({"prices": Reply({"error": "down"}, status=500)}, r"mempool: HTTP 500 from http://.*/api/v1/prices"),
    ({"rewards": Reply("<html>Bad gateway</html>", content_type="text/html")}, "mempool: not JSON"),
    ({"hashrate": Reply({"currentHashrate": 1e21})}, "mempool: no 'currentDifficulty'"),
    ({"rewards": Reply({"totalReward": "lots"})}, "mempool: totalReward is 'lots', not a number"),
    ({"prices": Reply({"time": 1, "USD": 0})}, "must all be above zero"),
    ({"prices": Reply(hang=True)}, "mempool: no answer within 0.3 s"),
])
async def test_mempool_failures_name_the_source(stub: HttpStub, override: dict[str, Reply], message: str):
    serve_mempool(stub, **override)
    with pytest.raises(PriceError, match=message):
        await MempoolHashprice(stub.url, timeout=0.3).latest()


async def test_nothing_listening_is_a_price_error(stub: HttpStub):
    url = stub.url
    stub.__exit__(None, None, None)  # the port is closed now
    with pytest.raises(PriceError, match="mempool: cannot reach"):
        await MempoolHashprice(url).latest()


# -- Luxor ----------------------------------------------------------------------------------------


def serve_luxor(stub: HttpStub, prices: list[float], newest: datetime) -> None:
    stub.route("/v1/hashrateindex/hashprice", Reply(luxor_hashprice(prices, newest)))


NOW = datetime(2025, 11, 20, 12, 7, tzinfo=UTC)


def luxor(stub: HttpStub, clock: list[float], **kwargs: object) -> LuxorHashprice:
    return LuxorHashprice(stub.url, SecretStr(KEY), clock=lambda: clock[0], wall=lambda: NOW, **kwargs)  # type: ignore[arg-type]


async def test_luxor_sends_the_key_in_its_header_and_takes_the_newest_point(stub: HttpStub):
    serve_luxor(stub, [39.1, 38.7, 38.2], newest=NOW - timedelta(minutes=7))
    quote = await luxor(stub, [10.0]).latest()
    assert (quote.value, quote.at, quote.source) == (38.2, 10.0, "luxor")
    (seen,) = stub.seen
    assert seen.headers["x-hi-api-key"] == KEY
    assert seen.query == {"currency": "USD", "hashunit": "PHS", "bucket": "15m", "span": "1D"}


async def test_luxor_order_of_points_does_not_matter(stub: HttpStub):
    payload = luxor_hashprice([39.1, 38.7, 38.2], NOW)
    stub.route("/v1/hashrateindex/hashprice", Reply({"data": payload["data"][::-1]}))
    assert (await luxor(stub, [0.0]).latest()).value == 38.2


async def test_luxor_key_never_reaches_the_log_or_an_error(stub: HttpStub, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    stub.route("/v1/hashrateindex/hashprice", Reply({"error": "invalid api key"}, status=401))
    feed = luxor(stub, [0.0])
    with pytest.raises(PriceError) as caught:
        await feed.latest()
    assert "HTTP 401" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(feed) and KEY not in caplog.text
    assert stub.seen[0].headers["x-hi-api-key"] == KEY  # it was sent, all the same


async def test_luxor_stays_within_its_rate_limit_and_serves_the_cached_quote(stub: HttpStub):
    serve_luxor(stub, [38.2], newest=NOW)
    clock = [0.0]
    feed = luxor(stub, clock, bucket=TokenBucket(20, 15.0, clock=lambda: clock[0]))
    first = None
    for _ in range(25):  # a burst of 25 calls at one instant: 20 reach the API
        quote = await feed.latest()
        first = first or quote
        assert quote == first
    assert feed.calls == len(stub.seen) == 20
    clock[0] += 14.9
    cached = await feed.latest()
    assert (len(stub.seen), cached.at) == (20, 0.0)  # the cached quote keeps its age
    clock[0] += 0.2
    assert (await feed.latest()).at == 15.1
    assert len(stub.seen) == 21
    clock[0] += 150  # ten more tokens, not more
    for _ in range(15):
        await feed.latest()
    assert len(stub.seen) == 31


async def test_luxor_rate_limited_before_any_quote_is_an_error(stub: HttpStub):
    stub.route("/v1/hashrateindex/hashprice", Reply({"error": "slow down"}, status=429))
    clock = [0.0]
    feed = luxor(stub, clock, bucket=TokenBucket(1, 15.0, clock=lambda: clock[0]))
    with pytest.raises(PriceError, match="HTTP 429"):
        await feed.latest()
    with pytest.raises(PriceError, match="rate limit reached before any quote"):
        await feed.latest()
    assert len(stub.seen) == 1


@pytest.mark.parametrize(("payload", "message"), [
    ({"data": []}, "expected a list of {timestamp, price}"),
    ({"message": "ok"}, "expected a list"),
    ({"data": [{"timestamp": "yesterday", "price": 38}]}, "timestamp 'yesterday' is not a time"),
    ({"data": [{"timestamp": "2025-11-20T12:00:00Z", "price": None}]}, "price is None, not a number"),
    ({"data": [{"timestamp": "2025-11-19T12:00:00Z", "price": 38}]}, "the newest point is from 2025-11-19"),
])
async def test_luxor_garbage_and_old_data_are_refused(stub: HttpStub, payload: object, message: str):
    stub.route("/v1/hashrateindex/hashprice", Reply(payload))
    with pytest.raises(PriceError, match=message):
        await luxor(stub, [0.0]).latest()


def test_the_registry_knows_every_price_source():
    assert price_sources().names() == ["fixed", "http", "luxor", "mempool", "time_of_use", "trace"]
