"""A 30-day back-test at 5-minute steps, and the hindsight optimum's solve time for it.

The trace is the first 30 days of the shipped 4CP summer month (8,640 steps) on
deploy/backtest-site.yaml. Baselines in the same run: the same back-test over one day (steps/s
should not fall with length: the engine is linear), the time ``decide`` + ``plan_transition``
alone take per step (what the engine adds around the policy), and the optimum for one day (how
the LP scales with the horizon).

The replay groups identical miners in identical states (``grouped``); each figure is printed
beside the ungrouped replay of the same one-day window in the same run. ``--miners N`` scales
the site's miner groups (and its limits) to about N miners, for the 1,000-miner figure.

    python benchmarks/backtest_30d.py [--days 30] [--policy merit-order] [--miners 1000] [--no-optimum]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import BacktestSite, load_backtest_site
from wattshift.daemon.backtest.trace import Trace, load_trace
from wattshift.policies.catalog import make_policy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--policy", default="merit-order")
    parser.add_argument("--site", type=Path, default=ROOT / "deploy" / "backtest-site.yaml")
    parser.add_argument("--trace", type=Path, default=ROOT / "simulators" / "traces" / "four_cp_summer_month.csv")
    parser.add_argument("--miners", type=int, help="scale the site's miner groups to about this many miners")
    parser.add_argument("--no-optimum", action="store_true", help="skip the hindsight optimum")
    args = parser.parse_args()
    site = load_backtest_site(args.site)
    if args.miners:
        site = scaled(site, args.miners)
    full = load_trace(args.trace)
    month, day = full.first_days(args.days), full.first_days(1)
    policy = make_policy(args.policy, {})
    loads = sum(g.count for g in site.miners) + sum(g.count for g in site.gpu_nodes)
    print(f"site {site.name}: {loads} loads; trace {args.trace.name}, step {full.step_seconds:.0f} s")

    results = {}
    runs = (("1 day", day, False), ("1 day", day, True), (f"{args.days:g} days", month, True))
    for name, trace, grouped in runs:
        # A fresh policy each run: a stateful one (strike-price) must not carry one run's state into the next.
        result = run_backtest(site, make_policy(args.policy, {}), trace, keep_records=False, grouped=grouped)
        results[name] = result
        t = result.totals
        print(f"back-test {name:>8s} {'grouped' if grouped else 'ungrouped':>9s}: {result.steps:6d} steps in "
              f"{result.wall_seconds:7.2f} s wall = {result.steps / result.wall_seconds:7.0f} steps/s "
              f"({result.decide_calls} decisions), margin ${t.margin_usd:,.2f}, {t.miner_switches} miner "
              f"switches ({t.miner_starts} starts, wear ${t.wear_usd:,.2f}), violations {len(result.violations)}")
    long = results[f"{args.days:g} days"]
    share = policy_share(site, policy, day)
    print(f"decide + plan alone: {share * 1000:.2f} ms per decision; the policy and sequencer are "
          f"{share * long.decide_calls / long.wall_seconds:.0%} of the {args.days:g}-day wall time")

    if args.no_optimum:
        return
    for name, trace in (("1 day", day), (f"{args.days:g} days", month)):
        began = time.perf_counter()
        best = solve_optimum(site, trace)
        total = time.perf_counter() - began
        ratio = results[name].totals.margin_usd / best.margin_usd
        print(f"optimum   {name:>8s}: {best.columns:7d} columns x {best.rows:7d} rows; "
              f"build {best.build_seconds:6.2f} s, "
              f"solve {best.solve_seconds:6.2f} s (total {total:.2f} s); {args.policy} reaches {ratio:.2%}")


def scaled(site: BacktestSite, miners: int) -> BacktestSite:
    """The site with every miner group, circuit limit and the budget times ``miners / count``;
    its GPU nodes as they are (a trace's ``gpu_demand`` counts nodes)."""
    factor = miners / sum(g.count for g in site.miners)
    data = site.model_dump()

    def scale(circuit: dict) -> dict:
        return {**circuit, "limit_kw": circuit["limit_kw"] * factor,
                "circuits": [scale(c) for c in circuit["circuits"]]}

    data.update(name=f"{site.name}-x{factor:.0f}", budget_kw=site.budget_kw * factor,
                reserve_kw=site.reserve_kw * factor, circuits=[scale(c) for c in data["circuits"]],
                miners=[{**g, "count": max(1, round(g["count"] * factor))} for g in data["miners"]])
    return BacktestSite.model_validate(data)


def policy_share(site, policy, trace: Trace) -> float:
    """Seconds per decide + plan, timed on the snapshots a one-day back-test sees."""
    from wattshift.daemon.backtest import replay as engine

    timings: list[float] = []
    original_decide = policy.decide
    original_plan = engine.plan_transition

    def timed_decide(snapshot):
        t0 = time.perf_counter()
        out = original_decide(snapshot)
        timings.append(time.perf_counter() - t0)
        return out

    def timed_plan(snapshot, allocation):
        t0 = time.perf_counter()
        out = original_plan(snapshot, allocation)
        timings[-1] += time.perf_counter() - t0
        return out

    policy.decide = timed_decide
    engine.plan_transition = timed_plan
    try:
        run_backtest(site, policy, trace, keep_records=False)
    finally:
        del policy.decide
        engine.plan_transition = original_plan
    return sum(timings) / len(timings)


if __name__ == "__main__":
    main()
