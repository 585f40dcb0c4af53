"""GPU rental rates: the Vast.ai-style market median per GPU, a fixed contract rate, a trace."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpstub import HttpStub, Reply, Seen
from price_payloads import vast_offer

from wattshift.drivers.gpu_rates import (
    CheckedGpuRate,
    FixedGpuRate,
    TraceGpuRate,
    VastMarketRate,
    gpu_rate_sources,
)
from wattshift.drivers.price_checks import GPU_RATE_LIMITS
from wattshift.drivers.prices import PriceError

TRACE = Path(__file__).parents[2] / "simulators" / "traces" / "gpu_rate_h100_2025.csv"

# What the marketplace lists for "H100 SXM" (8-GPU boxes mostly), plus what must be filtered out.
GOOD = [
    vast_offer(1, "H100 SXM", 8, 17.60),  # 2.20 per GPU
    vast_offer(2, "H100 SXM", 8, 15.92),  # 1.99
    vast_offer(3, "H100 SXM", 4, 9.40),  # 2.35
    vast_offer(4, "H100 SXM", 1, 2.05),  # 2.05
    vast_offer(5, "H100 SXM", 2, 4.50, reliability2=0.981),  # 2.25
]
BAD = [
    vast_offer(6, "H100 SXM", 8, 6.40, reliability2=0.91),  # 0.80: cheap because it drops out
    vast_offer(7, "H100 SXM", 1, 0.90, rentable=False),
    vast_offer(8, "H100 SXM", 8, 8.00, verified=False),
    vast_offer(9, "H100 PCIE", 1, 1.60),
    vast_offer(10, "H100 SXM", 8, 0.0),  # a broken listing
]
MEDIAN = statistics.median([17.60 / 8, 15.92 / 8, 9.40 / 4, 2.05, 4.50 / 2])


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


async def test_market_rate_is_the_median_per_gpu_of_reliable_rentable_offers(stub: HttpStub):
    stub.route("/api/v0/bundles/", Reply({"offers": GOOD + BAD}))
    feed = VastMarketRate(stub.url, "H100 SXM", min_reliability=0.98, clock=lambda: 42.0)
    quote = await feed.latest()
    assert quote.value == pytest.approx(MEDIAN) and MEDIAN == pytest.approx(2.20)
    assert (quote.at, quote.source, feed.gpu_model, feed.last_offers) == (42.0, "gpu-rate:H100 SXM:vast", "H100 SXM", 5)
    (seen,) = stub.seen
    assert json.loads(seen.query["q"]) == {
        "gpu_name": {"eq": "H100 SXM"}, "rentable": {"eq": True}, "reliability2": {"gte": 0.98},
        "type": "on-demand", "verified": {"eq": True},
    }


async def test_a_stricter_filter_moves_the_median(stub: HttpStub):
    stub.route("/api/v0/bundles/", Reply({"offers": GOOD + BAD}))
    quote = await VastMarketRate(stub.url, "H100 SXM", min_reliability=0.99, min_offers=2).latest()
    assert quote.value == pytest.approx(statistics.median([2.20, 1.99, 2.35, 2.05]))
    eights = await VastMarketRate(stub.url, "H100 SXM", num_gpus=8, min_offers=2).latest()
    assert eights.value == pytest.approx((2.20 + 1.99) / 2)
    assert json.loads(stub.seen[-1].query["q"])["num_gpus"] == {"eq": 8}


async def test_a_market_the_server_filters_gives_the_same_answer(stub: HttpStub):
    def filtering(seen: Seen) -> Reply:
        q = json.loads(seen.query["q"])
        offers = [o for o in GOOD + BAD if o["gpu_name"] == q["gpu_name"]["eq"] and o["rentable"]
                  and o["verified"] and o["reliability2"] >= q["reliability2"]["gte"]]
        return Reply({"offers": offers})

    stub.route("/api/v0/bundles/", filtering)
    assert (await VastMarketRate(stub.url, "H100 SXM").latest()).value == pytest.approx(MEDIAN)


@pytest.mark.parametrize(("reply", "message"), [
    (Reply({"offers": BAD}), r"gpu-rate:H100 SXM:vast: 0 of 5 offers pass the filter .* need 3"),
    (Reply({"offers": GOOD[:2]}), "2 of 2 offers pass"),
    (Reply({"success": False, "msg": "bad query"}), "expected {'offers': \\[...\\]}"),
    (Reply("Internal Server Error", status=500), "gpu-rate:H100 SXM:vast: HTTP 500"),
    (Reply("{offers: nope", content_type="application/json"), "not JSON"),
    (Reply(hang=True), "no answer within 0.3 s"),
])
async def test_market_failures_name_the_source(stub: HttpStub, reply: Reply, message: str):
    stub.route("/api/v0/bundles/", reply)
    with pytest.raises(PriceError, match=message):
        await VastMarketRate(stub.url, "H100 SXM", timeout=0.3).latest()


async def test_a_market_rate_in_cents_is_caught_by_the_sanity_rules(stub: HttpStub):
    cents = [{**o, "dph_total": o["dph_total"] * 100} for o in GOOD]
    stub.route("/api/v0/bundles/", Reply({"offers": cents}))
    feed = CheckedGpuRate(VastMarketRate(stub.url, "H100 SXM"), GPU_RATE_LIMITS)
    with pytest.raises(PriceError, match="rejected 220.0.*above_range"):
        await feed.latest()
    assert feed.gpu_model == "H100 SXM"


async def test_fixed_and_trace_rates():
    fixed = await FixedGpuRate("H100 SXM", 2.35, clock=lambda: 5.0).latest()
    assert (fixed.value, fixed.at, fixed.source) == (2.35, 5.0, "gpu-rate:H100 SXM:fixed")
    with pytest.raises(PriceError, match="must be a finite number >= 0"):
        FixedGpuRate("H100 SXM", -1.0)
    now = [0.0]
    trace = TraceGpuRate("H100 SXM", TRACE, clock=lambda: now[0], speedup=3600)  # an hour per second
    values = []
    for _ in range(48):
        values.append((await trace.latest()).value)
        now[0] += 1
    assert trace.gpu_model == "H100 SXM" and trace.name == "gpu-rate:H100 SXM:trace:gpu_rate_h100_2025.csv"
    assert all(1.6 <= v <= 2.7 for v in values) and len(set(values)) > 24  # hourly, with a daily shape


def test_the_shipped_trace_is_synthetic_and_within_the_market_band():
    text = TRACE.read_text()
    assert "synthetic" in text.splitlines()[0].lower()
    rows = [line.split(",") for line in text.splitlines() if line[:1].isdigit()]
    values = [float(v) for _, v in rows]
    assert len(rows) == 8760 and 1.65 <= min(values) < 1.9 and 2.4 < max(values) <= 2.65


def test_the_registry_knows_every_gpu_rate_source():
    assert gpu_rate_sources().names() == ["fixed", "trace", "vast"]


def test_bad_market_settings_are_refused():
    with pytest.raises(ValueError, match="min_reliability 1.5"):
        VastMarketRate("http://127.0.20.1", "H100 SXM", min_reliability=1.5)
    with pytest.raises(ValueError, match="min_offers 0"):
        VastMarketRate("http://127.0.20.1", "H100 SXM", min_offers=0)
