"""The issue's done-when: every shipped trace, back-tested, against its hindsight optimum.

`merit-order` must reach 97% of the optimum's margin (an LP relaxation: an upper bound, so the
ratio is conservative) with no limit violation; `strike-price` is run beside it as the familiar
baseline and its ratio printed, not judged. Run with ``-s`` to see the figures.

The traces written for issue 15 (a plateau during training, negative prices, short 4CP windows,
a low-hashprice month) are there to tell foresight from luck: on them merit-order is reported,
held to the limits and below the bound, not to 97% (it has no foresight, and the optimum charges
no switching yet, while the site model does).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from wattshift.daemon.backtest.optimum import Optimum, solve_optimum
from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import BacktestSite, load_backtest_site
from wattshift.daemon.backtest.trace import Trace, load_trace
from wattshift.policies.catalog import make_policy
from wattshift.simulators.make_traces import TRACES, write

ROOT = Path(__file__).resolve().parents[2]
TRACE_DIR = ROOT / "simulators" / "traces"


@cache
def site() -> BacktestSite:
    return load_backtest_site(ROOT / "deploy" / "backtest-site.yaml")


# A month-long trace is replayed here for its first week: the whole month of every policy beside
# the optimum is a benchmark (benchmarks/policies_vs_optimum.py, its figures in docs/backtest.md).
DAYS_IN_TESTS = 7


@cache
def trace_and_optimum(name: str) -> tuple[Trace, Optimum]:
    trace = load_trace(TRACE_DIR / name).first_days(DAYS_IN_TESTS)
    return trace, solve_optimum(site(), trace)


SWITCHING_TRACES = ("gpu_plateau_training.csv", "negative_prices_week.csv", "four_cp_windows_week.csv",
                    "low_hashprice_month.csv")


@pytest.mark.parametrize("name", [n for n in TRACES if n not in SWITCHING_TRACES])
def test_merit_order_reaches_97_percent_of_the_optimum(name: str) -> None:
    trace, best = trace_and_optimum(name)
    result = run_backtest(site(), make_policy("merit-order", {}), trace, keep_records=False)
    ratio = result.totals.margin_usd / best.margin_usd
    print(f"\n{name}: merit-order margin ${result.totals.margin_usd:,.2f}, optimum ${best.margin_usd:,.2f} "
          f"(LP, {best.solve_seconds:.1f} s), ratio {ratio:.2%}, violations {len(result.violations)}")
    assert result.violations == []
    assert 0.97 <= ratio <= 1.0 + 1e-9, f"{name}: ratio {ratio:.4f}"


@pytest.mark.parametrize("name", SWITCHING_TRACES)
def test_merit_order_is_reported_on_the_switching_traces(name: str) -> None:
    trace, best = trace_and_optimum(name)
    result = run_backtest(site(), make_policy("merit-order", {}), trace, keep_records=False)
    t = result.totals
    ratio = t.margin_usd / best.margin_usd
    print(f"\n{name}: merit-order margin ${t.margin_usd:,.2f}, optimum ${best.margin_usd:,.2f} (LP), ratio "
          f"{ratio:.2%}; {t.miner_starts} starts, wear ${t.wear_usd:,.2f}, {t.min_up_breaks} min-up breaks")
    assert result.violations == [] and t.refused_starts == 0
    assert ratio <= 1.0 + 1e-9


@pytest.mark.parametrize("name", list(TRACES))
def test_strike_price_is_reported_beside_it(name: str) -> None:
    try:
        policy = make_policy("strike-price", {})
    except ValueError:
        pytest.skip("the strike-price policy is not registered in this tree: its column is left out")
    trace, best = trace_and_optimum(name)
    result = run_backtest(site(), policy, trace, keep_records=False)
    ratio = result.totals.margin_usd / best.margin_usd
    print(f"\n{name}: strike-price margin ${result.totals.margin_usd:,.2f}, ratio {ratio:.2%}, "
          f"violations {len(result.violations)}")
    assert result.violations == []  # the sequencer keeps any policy inside the limits
    assert ratio <= 1.0 + 1e-9  # nothing beats hindsight


def test_shipped_traces_are_what_the_generator_writes(tmp_path: Path) -> None:
    for path in write(tmp_path):
        assert path.read_bytes() == (TRACE_DIR / path.name).read_bytes(), path.name
