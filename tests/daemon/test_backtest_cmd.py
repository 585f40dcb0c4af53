"""`wattshift backtest` end to end: files in, report (text or JSON) and a PNG out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattshift.daemon.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "backtest-site.yaml"
POLICY = ROOT / "tests" / "fixtures" / "backtest" / "merit-order.yaml"
SPIKE = ROOT / "simulators" / "traces" / "power_spike_day.csv"


def test_json_report_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "spike.png"
    code = main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(SPIKE),
                 "--json", "--plot", str(png)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    b = report["backtest"]
    assert (b["policy"], b["steps"], b["limit_violations"]) == ("merit-order", 288, 0)
    assert b["margin_usd"] == pytest.approx(
        b["revenue_usd"] - b["power_cost_usd"] - b["switching_cost_usd"] - b["wear_cost_usd"], abs=0.02)
    # Every start from cold pays its wear: 24 miners woke at least once.
    assert b["miner_starts"] >= 24 and b["wear_cost_usd"] == pytest.approx(0.25 * b["miner_starts"])
    assert (b["refused_starts"], b["min_up_breaks"]) == (0, 0)
    assert report["optimum"]["status"] == "Optimal"
    assert 0.97 <= report["ratio_to_optimum"] <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(SPIKE)])
    out = capsys.readouterr().out
    assert code == 0
    for words in ("back-test of merit-order on backtest-small", "energy", "margin", "violations             0",
                  "LP relaxation (upper bound)", "ratio", "miner wear", "refused within the minimum down time"):
        assert words in out


def test_bad_inputs_exit_2_and_say_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_trace = tmp_path / "bad.csv"
    bad_trace.write_text("timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh\n2025-01-01T00:00:00+00:00,-4,30\n")
    assert main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(bad_trace)]) == 2
    assert "bad.csv:2: hashprice_usd_per_ph_day: '-4' is outside" in capsys.readouterr().err
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("policy: no-such-policy\n")
    assert main(["backtest", "--site", str(SITE), "--policy", str(bad_policy), "--trace", str(SPIKE)]) == 2
    assert "no-such-policy" in capsys.readouterr().err
    bad_site = tmp_path / "site.yaml"
    bad_site.write_text("name: x\nbudget_kw: 10\nminers:\n  - {model: Antminer S21, count: 0}\n")
    assert main(["backtest", "--site", str(bad_site), "--policy", str(POLICY), "--trace", str(SPIKE)]) == 2
    assert "site.yaml:4: miners[0].count: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_json_on_stdout_is_pure_json_in_a_real_process() -> None:
    # HiGHS prints a banner on the C stdout when the process makes its first solver: a real
    # process, not capsys, is what shows it. The whole stdout must parse; the banner may go to stderr.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "wattshift.daemon.cli", "backtest", "--site", str(SITE), "--policy", str(POLICY),
         "--trace", str(SPIKE), "--json", "--mip"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    o = report["optimum"]
    assert o["kind"].startswith("MIP") and o["mip_rel_gap_target"] == 1e-4
    assert o["margin_usd"] <= o["bound_usd"] and 0 <= o["mip_gap"] <= 1e-4
    assert report["ratio_to_optimum"] <= report["ratio_to_incumbent"] <= 1.0


def test_a_cut_below_the_idle_draw_reports_the_shortfall_and_still_a_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    cut = tmp_path / "cut.csv"
    lines = ["timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,budget_kw"]
    lines += [f"2025-08-01T{h:02d}:00:00+00:00,45,30,{'0.1' if h == 3 else ''}" for h in range(8)]
    cut.write_text("\n".join(lines) + "\n")
    code = main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(cut), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1  # the site is over its 0.1 kW: a violation, whatever any policy does
    assert "the limit cannot be met at 1 step(s)" in captured.err
    assert report["optimum"]["shortfall"].startswith("the limit cannot be met")
    b = report["backtest"]
    assert b["margin_within_limits_usd"] == pytest.approx(b["margin_usd"] - b["revenue_over_limit_usd"], abs=0.02)
    assert b["revenue_over_limit_usd"] >= 0 and 0 < report["ratio_to_optimum"] <= 1.0


def test_a_policy_that_breaks_a_limit_the_optimum_keeps_gets_no_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # Firm work runs from the first hour; at 03:00 the budget falls to 10 kW, below the firm
    # nodes' 14.4 kW. The merit order started them (firm comes first) and cannot stop them: it is
    # over the limit. The optimum, seeing the cut, leaves the firm work waiting: it keeps the limit.
    site = tmp_path / "site.yaml"
    site.write_text("name: firm\nbudget_kw: 40\nminers:\n  - {model: Antminer S21, count: 2}\n"
                    "gpu_nodes:\n  - {count: 2, tier: firm, host_max_kw: 1.6}\n")
    cut = tmp_path / "cut.csv"
    lines = ["timestamp,hashprice_usd_per_ph_day,power_usd_per_mwh,budget_kw,gpu_rate_usd_per_gpu_hour,gpu_demand"]
    lines += [f"2025-08-01T{h:02d}:00:00+00:00,45,30,{'10' if h == 3 else ''},2.0,2" for h in range(6)]
    cut.write_text("\n".join(lines) + "\n")
    code = main(["backtest", "--site", str(site), "--policy", str(POLICY), "--trace", str(cut), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["backtest"]["limit_violations"] >= 1
    assert report["optimum"]["shortfall"] is None
    assert report["ratio_to_optimum"] is None
    assert "broke a limit at 1 step(s) where the optimum keeps it" in report["ratio_undefined"]
    assert report["backtest"]["revenue_over_limit_usd"] > 0
    code = main(["backtest", "--site", str(site), "--policy", str(POLICY), "--trace", str(cut)])
    assert "ratio         undefined (the policy broke a limit" in capsys.readouterr().out


def test_window_hours_solves_in_windows_whose_sum_bounds_the_whole(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(SPIKE), "--json"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main(["backtest", "--site", str(SITE), "--policy", str(POLICY), "--trace", str(SPIKE), "--json",
                 "--window-hours", "6", "--mip"]) == 0
    parts = json.loads(capsys.readouterr().out)
    assert (whole["optimum"]["windows"], parts["optimum"]["windows"]) == (1, 4)
    # A MIP in windows: each window's dual bound is above its optimum, so the sum stays above the
    # policy's margin; the windows only loosen what they cut, so it is not far above the whole LP.
    assert parts["backtest"]["margin_within_limits_usd"] <= parts["optimum"]["bound_usd"]
    assert parts["optimum"]["bound_usd"] <= whole["optimum"]["bound_usd"] * 1.01
    assert 0.97 <= parts["ratio_to_optimum"] <= 1.0
