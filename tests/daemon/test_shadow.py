"""Shadow mode: the candidate's decision, its value against the live one, journal and metrics."""

import pytest
from factories import miner, snapshot
from gpu_factories import H100_FULL_NODE_WATTS, gpu_node, job, with_gpus
from prometheus_client import CollectorRegistry

from wattshift.daemon.control.sequencer import Plan
from wattshift.daemon.control.shadow import ShadowRecorder, compare, value_usd_per_hour
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.journal.store import AsyncJournal
from wattshift.policies.catalog import make_policy

EMPTY_PLAN = Plan((), (), ())
# An S21 at 4 kW: 200 TH/s * sqrt(4000/3500) = 213.8 TH/s; at $45/PH/day that is
# $0.4009/h, and 4 kW at $30/MWh costs $0.12/h: $0.2809/h.
S21_AT_4KW_USD_PER_HOUR = 45 * 200 * (4000 / 3500) ** 0.5 / 1000 / 24 - 4 * 30 / 1000


def test_a_miner_is_worth_its_hashrate_less_its_power():
    site = snapshot([miner("a")], budget=10_000, power=30)
    assert value_usd_per_hour(site.load("a"), 4000, site.prices) == pytest.approx(S21_AT_4KW_USD_PER_HOUR)
    assert value_usd_per_hour(site.load("a"), 0, site.prices) == 0


def test_a_gpu_node_is_worth_its_jobs_rate_at_the_speed_its_cap_allows():
    site = with_gpus(snapshot([], budget=10_000, power=30), gpu_node("g", job=job(usd_per_gpu_hour=2.0)))
    full = value_usd_per_hour(site.load("g"), H100_FULL_NODE_WATTS, site.prices)
    assert full == pytest.approx(16.0 - 7.1 * 30 / 1000)
    half_cap = value_usd_per_hour(site.load("g"), 1500 + 8 * 350, site.prices)
    assert half_cap == pytest.approx(16.0 * 0.5 ** (1 / 3) - 4.3 * 30 / 1000)


def test_compare_counts_only_devices_beyond_the_deadband():
    site = snapshot([miner("a"), miner("b")], budget=10_000, power=30)
    live = make_policy("merit-order", {"min_dwell_seconds": 0}).decide(site)
    same = compare(site, live, live)
    assert same.differences == () and same.difference_usd_per_hour == 0
    off = make_policy("strike-price", {"strike_usd_per_mwh": 10, "curtail_after_minutes": 0,
                                       "min_dwell_seconds": 0}).decide(site)
    result = compare(site, live, off)
    assert {d.device_id for d in result.differences} == {"a", "b"}
    assert result.difference_usd_per_hour == pytest.approx(-2 * S21_AT_4KW_USD_PER_HOUR)


async def test_the_recorder_journals_what_differs_bounded_and_exports_metrics(tmp_path):
    registry = CollectorRegistry()
    site = snapshot([miner(f"m{i:02d}") for i in range(30)], budget=200_000, power=30)
    live = make_policy("merit-order", {"min_dwell_seconds": 0}).decide(site)
    candidate = make_policy("strike-price", {"strike_usd_per_mwh": 10, "curtail_after_minutes": 0,
                                             "min_dwell_seconds": 0})
    async with await AsyncJournal.open(tmp_path / "journal.sqlite3") as journal:
        shadow = ShadowRecorder(candidate, registry=registry, journal=journal, max_devices=5)
        await shadow.decision(site, live, EMPTY_PLAN, dry_run=False)
        await shadow.decision(site, candidate.decide(site), EMPTY_PLAN, dry_run=False)  # agrees: not journaled
        [entry] = await journal.query(kind=EntryKind.DECISION)
    assert entry.summary.startswith("shadow strike-price: 30 device(s) differ, -8.43 USD/h vs live")
    assert entry.data["shadow"] is True
    assert len(entry.data["devices"]) == 5 and entry.data["devices_left_out"] == 25
    assert entry.data["devices"][0]["candidate_watts"] == 0 and entry.data["devices"][0]["live_watts"] == 4000
    # The metrics show the latest comparison: the candidate agreed with the second live decision.
    assert registry.get_sample_value("wattshift_shadow_devices_differing") == 0
    assert registry.get_sample_value("wattshift_shadow_revenue_difference_usd_per_hour") == 0


async def test_the_recorder_exports_the_difference(tmp_path):
    registry = CollectorRegistry()
    site = snapshot([miner("a"), miner("b")], budget=10_000, power=30)
    path = tmp_path / "candidate.yaml"
    path.write_text("policy: strike-price\noptions: {strike_usd_per_mwh: 10, curtail_after_minutes: 0, "
                    "min_dwell_seconds: 0}\n")
    shadow = ShadowRecorder.from_file(path, registry=registry)
    live = make_policy("merit-order", {"min_dwell_seconds": 0}).decide(site)
    await shadow.decision(site, live, EMPTY_PLAN, dry_run=False)
    assert registry.get_sample_value("wattshift_shadow_devices_differing") == 2
    assert registry.get_sample_value("wattshift_shadow_revenue_difference_usd_per_hour") == pytest.approx(
        -2 * S21_AT_4KW_USD_PER_HOUR)


async def test_a_failing_candidate_never_disturbs_the_loop(caplog):
    class Broken:
        name = "broken"

        def decide(self, snapshot):
            raise RuntimeError("bug in candidate")

    registry = CollectorRegistry()
    site = snapshot([miner("a")], budget=10_000)
    await ShadowRecorder(Broken(), registry=registry).decision(site, make_policy("merit-order", {}).decide(site),
                                                               EMPTY_PLAN, dry_run=False)
    assert "shadow policy broken failed" in caplog.text
