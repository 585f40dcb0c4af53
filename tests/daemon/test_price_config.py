"""The ``prices`` section: every source validated with named errors, old files still valid, and
every feed built from it, behind its sanity rules, against local HTTP servers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from httpstub import HttpStub, Reply
from price_payloads import (
    TARIFF,
    WORKED_HASHPRICE,
    luxor_hashprice,
    mempool_hashrate_3d,
    mempool_prices,
    mempool_reward_stats,
    vast_offer,
)
from pydantic import SecretStr

from wattshift.daemon.config.price import PricesConfig
from wattshift.daemon.config.site import Credentials, load_site
from wattshift.daemon.config.yamlfile import FileInvalid, parse_model
from wattshift.daemon.runtime.feeds import (
    MissingSecret,
    make_price_feed,
    make_price_feeds,
)
from wattshift.drivers.price_checks import CheckedFeed
from wattshift.drivers.prices import PriceError

TRACES = Path(__file__).parents[2] / "simulators" / "traces"



def prices(text: str) -> PricesConfig:
    return parse_model(text, PricesConfig, file="site.yaml")


def problems(text: str) -> str:
    with pytest.raises(FileInvalid) as caught:
        prices(text)
    return str(caught.value)


def test_the_first_site_files_stay_valid():
    config = prices("hashprice_usd_per_ph_day: {source: fixed, value: 45}\n"
                    "power_usd_per_mwh: {source: trace, file: power.csv, speedup: 60}\nstale_after_seconds: 600\n")
    assert config.hashprice_usd_per_ph_day.value == 45  # type: ignore[union-attr]
    assert config.power_usd_per_mwh.speedup == 60  # type: ignore[union-attr]
    default = PricesConfig()
    assert (default.hashprice_usd_per_ph_day.value, default.power_usd_per_mwh.value,  # type: ignore[union-attr]
            default.stale_after_seconds, default.gpu_rates_usd_per_gpu_hour) == (45.0, 40.0, 900, {})


def test_every_source_parses():
    config = prices(TARIFF + """
hashprice_usd_per_ph_day: {source: luxor, api_key: luxor}
gpu_rates_usd_per_gpu_hour:
  H100 SXM: {source: vast, gpu_name: H100 SXM, min_reliability: 0.99, num_gpus: 8}
  A100 SXM4: {source: fixed, value: 1.10}
  RTX 4090: {source: trace, file: gpu.csv}
sanity:
  power: {minimum: -250, maximum: 9000}
""")
    assert config.secret_names() == {"prices.hashprice_usd_per_ph_day.api_key": "luxor"}
    assert sorted(config.gpu_rates_usd_per_gpu_hour) == ["A100 SXM4", "H100 SXM", "RTX 4090"]
    assert config.trace_files() == {"prices.gpu_rates_usd_per_gpu_hour.RTX 4090.file": Path("gpu.csv")}
    assert config.sanity.power.minimum == -250 and config.sanity.hashprice.max_jump_factor == 2.0
    assert prices("power_usd_per_mwh: {source: http, url: 'https://example.net/lmp.csv', format: csv, "
                  "column: Price, unit: cents_per_kwh}").power_usd_per_mwh.unit == "cents_per_kwh"  # type: ignore[union-attr]
    assert prices("hashprice_usd_per_ph_day: {source: mempool}").hashprice_usd_per_ph_day.source == "mempool"


@pytest.mark.parametrize(("text", "expected"), [
    ("power_usd_per_mwh: {source: luxor, api_key: k}",
     "site.yaml:1: power_usd_per_mwh: Input tag 'luxor' found using 'source' does not match"),
    ("hashprice_usd_per_ph_day: {source: vast, gpu_name: H100}", "hashprice_usd_per_ph_day: Input tag 'vast'"),
    ("hashprice_usd_per_ph_day: {source: mempool, base_url: 'ftp://x'}", "base_url: URL scheme should be"),
    ("hashprice_usd_per_ph_day: {source: luxor}", "hashprice_usd_per_ph_day.luxor.api_key: Field required"),
    ("power_usd_per_mwh: {source: http, url: 'http://x/rt'}", "format json needs 'field'"),
    ("power_usd_per_mwh: {source: http, url: 'http://x/rt', format: csv}", "format csv needs 'column'"),
    ("power_usd_per_mwh: {source: http, url: 'http://x/rt', field: p, unit: usd_per_wh}", "unit: Input should be"),
    ("power_usd_per_mwh: {source: fixed, value: 40, currency: EUR}", "currency: Extra inputs are not permitted"),
    (TARIFF.replace("America/Chicago", "Texas/Houston"), "unknown time zone 'Texas/Houston'"),
    (TARIFF.replace('"19:00", end: "14:00"', '"19:00", end: "15:00"'),
     "periods[0] 'peak' and periods[1] 'off-peak' overlap on Tue 14:00-15:00"),
    (TARIFF.replace("[sat, sun]", "[sat]"), "no period covers Mon 00:00-14:00, Sun 14:00-24:00"),
    (TARIFF.replace("days: mon-fri", "days: mon-fry", 1), "day 'mon-fry': expected mon..sun"),
    (TARIFF.replace('start: "14:00"', 'start: "2pm"', 1), "periods[0].start: time '2pm': expected HH:MM"),
    ("gpu_rates_usd_per_gpu_hour: {H100 SXM: {source: vast, gpu_name: H100 SXM, min_reliability: 98}}",
     "min_reliability: Input should be less than or equal to 1"),
    ("gpu_rates_usd_per_gpu_hour: {'H100/SXM': {source: fixed, value: 2}}", "String should match pattern"),
    ("sanity: {hashprice: {minimum: 50, maximum: 5}}", "minimum (50.0) must be below maximum (5.0)"),
    ("sanity: {gpu_rate: {minimum: 0, maximum: 50, max_jump_factor: 0.5}}", "greater than 1"),
    ("hashprice_usd_per_ph_day: {source: fixed, value: 0.045}",
     "hashprice_usd_per_ph_day.value 0.045 is outside [1, 5000] (sanity.hashprice): a wrong unit?"),
    ("gpu_rates_usd_per_gpu_hour: {H100 SXM: {source: fixed, value: 235}}",
     "gpu_rates_usd_per_gpu_hour.H100 SXM.value 235 is outside [0.05, 50]"),
    (TARIFF.replace("usd_per_mwh: 95", "usd_per_mwh: -1500"),
     "power_usd_per_mwh.periods[0].usd_per_mwh -1500 is outside"),
])
def test_bad_sources_are_refused_with_the_key_and_the_reason(text: str, expected: str):
    assert expected in problems(text)


# -- building the feeds ---------------------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[HttpStub]:
    with HttpStub() as server:
        yield server


NOW = datetime(2025, 7, 14, 19, 30, tzinfo=UTC)  # a Monday, 14:30 in Chicago


async def test_a_whole_prices_section_runs_against_live_style_apis(stub: HttpStub, tmp_path: Path):
    stub.route("/api/v1/mining/hashrate/3d", Reply(mempool_hashrate_3d()))
    stub.route("/api/v1/mining/reward-stats/144", Reply(mempool_reward_stats()))
    stub.route("/api/v1/prices", Reply(mempool_prices()))
    stub.route("/api/v0/bundles/", Reply({"offers": [vast_offer(i, "H100 SXM", 8, 8 * p)
                                                     for i, p in enumerate([2.1, 2.3, 2.2], 1)]}))
    (tmp_path / "rate.csv").write_text("0,1.1\n3600,1.3\n")
    config = prices(TARIFF + f"""
hashprice_usd_per_ph_day: {{source: mempool, base_url: '{stub.url}'}}
gpu_rates_usd_per_gpu_hour:
  H100 SXM: {{source: vast, base_url: '{stub.url}', gpu_name: H100 SXM}}
  A100 SXM4: {{source: trace, file: rate.csv}}
""")
    feeds = make_price_feeds(config, tmp_path, lambda: 11.0, {}, wall=lambda: NOW)
    hashprice, power = await feeds.hashprice.latest(), await feeds.power.latest()
    assert hashprice.value == pytest.approx(WORKED_HASHPRICE, abs=0.05) and hashprice.source == "hashprice:mempool"
    assert (power.value, power.source, power.at) == (95, "power:time-of-use:peak", 11.0)
    h100, a100 = feeds.gpu_rates["H100 SXM"], feeds.gpu_rates["A100 SXM4"]
    assert (await h100.latest()).value == pytest.approx(2.2) and h100.gpu_model == "H100 SXM"
    assert (await a100.latest()).value == 1.1 and a100.gpu_model == "A100 SXM4"
    assert all(isinstance(f, CheckedFeed) for f in (feeds.hashprice, feeds.power, h100, a100))


async def test_luxor_takes_its_key_from_the_secrets_by_name(stub: HttpStub, tmp_path: Path):
    stub.route("/v1/hashrateindex/hashprice", Reply(luxor_hashprice([38.2], NOW)))
    config = prices(f"hashprice_usd_per_ph_day: {{source: luxor, base_url: '{stub.url}', api_key: luxor}}")
    secrets = {"luxor": Credentials(username="api", password=SecretStr("hi-key-123"))}
    feed = make_price_feed(config.hashprice_usd_per_ph_day, "hashprice", tmp_path, lambda: 0.0, secrets,
                           wall=lambda: NOW)
    assert (await feed.latest()).value == 38.2
    assert stub.seen[0].headers["x-hi-api-key"] == "hi-key-123"
    with pytest.raises(MissingSecret, match="prices.hashprice: api_key 'luxor' is not in the secrets file"):
        make_price_feed(config.hashprice_usd_per_ph_day, "hashprice", tmp_path, lambda: 0.0, {})


async def test_configured_sanity_thresholds_apply(stub: HttpStub, tmp_path: Path):
    stub.route("/rt", Reply({"price": -35.0}))
    text = f"power_usd_per_mwh: {{source: http, url: '{stub.url}/rt', field: price}}\n"
    strict = make_price_feeds(prices(text + "sanity: {power: {minimum: 0, maximum: 9000}}"), tmp_path,
                              lambda: 0.0, {})
    with pytest.raises(PriceError, match=r"power:http: rejected -35.0: negative"):
        await strict.power.latest()
    nodal = make_price_feeds(prices(text), tmp_path, lambda: 0.0, {})  # negative prices are real by default
    assert (await nodal.power.latest()).value == -35.0


def test_a_missing_trace_is_a_price_error_naming_the_file(tmp_path: Path):
    config = prices("hashprice_usd_per_ph_day: {source: trace, file: nowhere.csv}")
    with pytest.raises(PriceError, match=r"prices.hashprice.file: cannot read .*nowhere.csv: No such file"):
        make_price_feeds(config, tmp_path, lambda: 0.0, {})
    gpu = prices("gpu_rates_usd_per_gpu_hour: {H100 SXM: {source: trace, file: gone.csv}}")
    with pytest.raises(PriceError, match=r"prices.gpu_rates_usd_per_gpu_hour.H100 SXM.file: cannot read"):
        make_price_feeds(gpu, tmp_path, lambda: 0.0, {})


async def test_the_shipped_traces_load_through_the_config():
    config = prices("hashprice_usd_per_ph_day: {source: trace, file: hashprice_2025_daily.csv}\n"
                    "gpu_rates_usd_per_gpu_hour: {H100 SXM: {source: trace, file: gpu_rate_h100_2025.csv}}\n")
    feeds = make_price_feeds(config, TRACES, lambda: 0.0, {})
    assert 30 < (await feeds.hashprice.latest()).value < 70
    assert 1.7 <= (await feeds.gpu_rates["H100 SXM"].latest()).value <= 2.6


async def test_a_unit_slip_upstream_holds_the_last_good_power_price(stub: HttpStub, tmp_path: Path):
    answers = iter([{"lmp": 42.1}, {"lmp": 42_100.0}, {"lmp": 39.0}])  # $/MWh, then $/kWh x 1e6 by mistake
    stub.route("/rt", lambda seen: Reply(next(answers)))
    now = [0.0]
    config = prices(f"power_usd_per_mwh: {{source: http, url: '{stub.url}/rt', field: lmp}}")
    feed = make_price_feeds(config, tmp_path, lambda: now[0], {}).power
    assert (await feed.latest()).value == 42.1
    now[0] = 15.0
    held = await feed.latest()
    assert (held.value, held.at) == (42.1, 0.0)
    now[0] = 30.0
    assert ((await feed.latest()).value, feed.last_rejection) == (39.0, None)  # type: ignore[attr-defined]


def test_the_example_prices_file_is_valid():
    text = (Path(__file__).parents[2] / "deploy" / "prices.example.yaml").read_text()
    section = "\n".join(line[2:] for line in text.splitlines() if line.startswith("  "))
    config = prices(section)
    assert config.hashprice_usd_per_ph_day.source == "mempool" and config.power_usd_per_mwh.source == "time_of_use"
    assert set(config.gpu_rates_usd_per_gpu_hour) == {"H100 SXM", "A100 SXM4"}


def test_a_site_naming_a_luxor_key_needs_it_in_the_secrets_file(tmp_path: Path):
    site = tmp_path / "site.yaml"
    site.write_text("name: s\nbudget_kw: 100\nsecrets_file: secrets.yaml\n"
                    "prices:\n  hashprice_usd_per_ph_day: {source: luxor, api_key: luxor}\n")
    (tmp_path / "secrets.yaml").write_text("braiins: {password: x}\n")
    with pytest.raises(FileInvalid, match="prices.hashprice_usd_per_ph_day.api_key: 'luxor' is not in the secrets"):
        load_site(site, environ={})
    loaded = load_site(site, environ={"WATTSHIFT_SECRET_LUXOR": "hi-key-123"})
    assert loaded.credentials["luxor"].password.get_secret_value() == "hi-key-123"
    assert "hi-key-123" not in repr(loaded) and "hi-key-123" not in loaded.model_dump_json()


async def test_the_jump_window_of_a_sped_up_trace_is_in_trace_time(tmp_path: Path):
    # Hashprice more than halves over a day of trace (as at the April 2024 halving): a real move.
    # Played a day per second it is still no jump; the same move within a minute of trace is one.
    (tmp_path / "halving.csv").write_text("0,120\n86400,55\n172800,55\n")
    (tmp_path / "glitch.csv").write_text("0,120\n60,55\n120,120\n")
    now = [0.0]
    for file, speedup, seen in [("halving.csv", 86400, 55), ("glitch.csv", 60, 120)]:
        config = prices(f"hashprice_usd_per_ph_day: {{source: trace, file: {file}, speedup: {speedup}}}")
        now[0] = 0.0
        feed = make_price_feeds(config, tmp_path, lambda: now[0], {}).hashprice
        await feed.latest()
        now[0] = 1.0  # one second of loop clock: a day of the first trace, a minute of the second
        assert (await feed.latest()).value == seen
