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
