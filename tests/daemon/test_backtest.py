"""The back-test engine: the same policy and sequencer, judged on the model's true draw."""

from __future__ import annotations

import pytest
from backtest_factories import FREE_SWITCHING, gpu_node, site, trace

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import BacktestSite
from wattshift.daemon.backtest.site_model import SiteModel
from wattshift.daemon.backtest.trace import TraceInvalid, parse_trace
from wattshift.daemon.control.sequencer import Action, Step
from wattshift.policies.catalog import make_policy

MERIT = make_policy("merit-order", {})


def small_site() -> BacktestSite:
    return site(
        budget_kw=40, reserve_kw=1,
        circuits=[{"name": "pdu", "limit_kw": 20}],
        miners=[{"model": "Antminer S21", "count": 6, "circuit": "pdu", "switching": FREE_SWITCHING},
                {"model": "Antminer S19 XP", "count": 6, "switching": FREE_SWITCHING}],
    )


def test_the_merit_order_never_beats_the_optimum_and_never_breaks_a_limit() -> None:
    rows = [{"power": p, "budget_kw": b} for p, b in
            [(25, ""), (25, ""), (80, ""), (300, ""), (25, 15), (25, 15), (-5, ""), (40, "")]]
    t = trace(rows, minutes=5)
    result = run_backtest(small_site(), MERIT, t)
    best = solve_optimum(small_site(), t)
    assert result.violations == []
    assert result.totals.margin_usd <= best.margin_usd + 1e-6
    assert result.totals.margin_usd / best.margin_usd >= 0.97


def test_a_budget_cut_is_met_before_it_starts() -> None:
    rows = [{"power": 20, "budget_kw": b} for b in ("", "", "", 12, 12, "")]
    result = run_backtest(small_site(), MERIT, trace(rows, minutes=5))
    assert result.violations == []
    draws = [r.miner_watts + r.gpu_watts for r in result.records]
    assert draws[0] > 30_000  # flat out while the budget allows
    assert draws[2] < 12_000  # the step before the cut already ends under it (its mean holds the ramp)
    assert draws[3] <= 12_000 and draws[4] <= 12_000


def test_the_model_reports_true_draw_over_a_limit() -> None:
    model = SiteModel(site(miners=[{"model": "Antminer S21", "count": 2, "switching": FREE_SWITCHING}]))
    model.apply([Step(f"m0-{n}", "site", Action.WAKE, 4000, 12, 4000, "test") for n in range(2)], 0.0)
    totals = model.advance(300, hashprice=45, power_price=30, limits={"site": 7000})
    assert totals.violations and totals.violations[0].startswith("site: 8.00 kW over its 7.00 kW limit")
    assert totals.miner_switches == 2
    # Ramping from sleep at 600 W/s: the energy is the ramp's triangle plus the flat part.
    ramp = (4000 - 12) / 600
    expected_wh = 2 * (ramp * (12 + 4000) / 2 + (300 - ramp) * 4000) / 3600
    assert totals.miner_wh == pytest.approx(expected_wh)


def test_a_gpu_job_earns_its_rate_at_its_cap_and_pays_for_starts_and_interruptions() -> None:
    model = SiteModel(site(miners=[], gpu_nodes=[gpu_node(restart_seconds=600, checkpoint_seconds=300, penalty_usd=7)]))
    model.set_gpu_work(1, 2.0)
    model.apply([Step("g0-0", "site", Action.WAKE, 1500 + 8 * 350, 1360, 4300, "test")], 0.0)
    running = model.advance(3600, hashprice=45, power_price=30, limits={"site": 1e9})
    assert running.gpu_starts == 1
    assert running.ai_usd == pytest.approx(16 * 0.5 ** (1 / 3))
    assert running.switching_usd == pytest.approx(16 * 600 / 3600)
    assert running.gpu_wh == pytest.approx(4300)
    model.apply([Step("g0-0", "site", Action.SLEEP, 0, 4300, 1360, "test")], 3600.0)
    stopped = model.advance(3600, hashprice=45, power_price=30, limits={"site": 1e9})
    assert stopped.job_interruptions == 1
    assert stopped.switching_usd == pytest.approx(7 + 16 * 300 / 3600)
    assert stopped.ai_usd == 0 and stopped.gpu_wh == pytest.approx(1360)
    model.set_gpu_work(0, 2.0)  # the job finished: its node idles, and that is no interruption
    assert model.advance(60, hashprice=45, power_price=30, limits={"site": 1e9}).job_interruptions == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,power_usd_per_mwh\n", "missing column(s) ['hashprice_usd_per_ph_day']"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,colour\n", "unknown column(s) ['colour']"),
        ("# made by hand\ntimestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00+00:00,45,abc\n",
         "t.csv:3: power_usd_per_mwh: 'abc' is not a number"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00,45,30\n", "has no UTC offset"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00+00:00,45,30\n"
         "2025-01-01T00:00:00+00:00,45,30\n", "t.csv:3: timestamp: '2025-01-01T00:00:00+00:00' is not after"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00+00:00,45,250000\n",
         "power_usd_per_mwh: '250000' is outside"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,gpu_demand\n2025-01-01T00:00:00+00:00,45,30,1.5\n",
         "gpu_demand: '1.5' is not a whole number"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,day_ahead_usd_per_mwh\n"
         "2025-01-01T00:00:00+00:00,45,30,twelve\n", "t.csv:2: day_ahead_usd_per_mwh: 'twelve' is not a number"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,day_ahead_usd_per_mwh\n"
         "2025-01-01T00:00:00+00:00,45,30,-20000\n", "t.csv:2: day_ahead_usd_per_mwh: '-20000' is outside"),
        ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,day_ahead_usd_per_mwh\n"
         "2025-01-01T00:00:00+00:00,45,30,nan\n", "t.csv:2: day_ahead_usd_per_mwh: 'nan' is outside"),
    ],
)
def test_a_bad_trace_is_refused_naming_line_column_and_value(text: str, message: str) -> None:
    with pytest.raises(TraceInvalid) as caught:
        parse_trace(text, name="t.csv")
    assert message in str(caught.value)


def test_the_day_ahead_price_is_read_where_given_and_none_where_empty_or_absent() -> None:
    text = ("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,day_ahead_usd_per_mwh\n"
            "2025-01-01T00:00:00+00:00,45,30,27.5\n2025-01-01T00:05:00+00:00,45,4000,\n"
            "2025-01-01T00:10:00+00:00,45,30,-12\n")
    assert [r.day_ahead_usd_per_mwh for r in parse_trace(text, name="t").rows] == [27.5, None, -12.0]
    assert [r.power_usd_per_mwh for r in parse_trace(text, name="t").rows] == [30, 4000, 30]
    plain = "timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00+00:00,45,30\n"
    assert parse_trace(plain, name="t").rows[0].day_ahead_usd_per_mwh is None


def test_a_gap_between_rows_counts_one_step_and_rows_keep_their_own_length() -> None:
    text = "timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n" + "\n".join(
        f"2025-01-0{d}T00:{m:02d}:00+00:00,45,30" for d, m in ((1, 0), (1, 5), (1, 10), (3, 0), (3, 5)))
    t = parse_trace(text, name="gaps")
    assert t.step_seconds == 300 and t.durations == (300, 300, 300, 300, 300)


def test_a_site_naming_an_unknown_model_or_circuit_is_refused() -> None:
    with pytest.raises(ValueError, match="model 'Antminer S9' has no simulated range"):
        site(miners=[{"model": "Antminer S9", "count": 1}])
    with pytest.raises(ValueError, match=r"gpu_nodes\[0\].circuit 'pdu-9' is not a circuit"):
        site(gpu_nodes=[gpu_node(circuit="pdu-9")])


def test_an_operators_site_file_back_tests_as_counts_of_its_models(tmp_path) -> None:
    from wattshift.daemon.backtest.site import load_backtest_site
    from wattshift.daemon.config.yamlfile import FileInvalid

    real = tmp_path / "site.yaml"
    real.write_text("name: barn\nbudget_kw: 50\ncircuits: [{name: pdu, limit_kw: 20}]\nminers:\n"
                    "  - {circuit: pdu, addresses: 10.0.0.1-10.0.0.5, model: Antminer S21}\n"
                    "  - {addresses: 10.0.1.0/30, model: S19 XP}\n")
    loaded = load_backtest_site(real)
    assert [(g.model, g.count, g.circuit) for g in loaded.miners] == [("Antminer S21", 5, "pdu"), ("S19 XP", 2, "site")]
    real.write_text("name: barn\nbudget_kw: 50\nminers:\n  - {addresses: 10.0.0.1}\n")
    with pytest.raises(FileInvalid, match=r"miners\[0\].model: a back-test needs the model"):
        load_backtest_site(real)
