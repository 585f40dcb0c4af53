"""The hindsight optimum at scale: 40 groups over 30 days at 5-minute steps, beside 3 days.

A site of 40 groups (36 miner groups: four models on nine circuits; four GPU groups of 8x H100
nodes, two of them firm) on the shipped 4CP summer month. Peers in the same run: the first 3
days solved whole and in windows (the windows' sum must be at least the whole: it is a bound,
and how close it is shows what the cut costs), then the whole horizon in windows. With
``--whole`` the whole horizon is also solved at once (slow: minutes). Not a test: it prints.

    python benchmarks/optimum_scale.py [--days 30] [--window-hours 24] [--overlap-hours 3]
                                       [--workers N] [--switching] [--mip] [--whole]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.site import BacktestSite
from wattshift.daemon.backtest.trace import load_trace

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["Antminer S21", "Antminer S19 XP", "Whatsminer M60S", "Whatsminer M50S"]


def forty_groups() -> BacktestSite:
    circuits = [{"name": f"container-{i}", "limit_kw": 120 + 10 * (i % 3)} for i in range(9)]
    miners = [{"model": MODELS[g % 4], "count": 8 + g % 5, "circuit": f"container-{g // 4}"} for g in range(36)]
    gpus = [{"count": 4, "circuit": "site", "tier": "firm" if g < 2 else "suspendable", "host_idle_kw": 0.8,
             "host_max_kw": 1.6, "checkpoint_seconds": 60, "restart_seconds": 300, "penalty_usd": 5}
            for g in range(4)]
    return BacktestSite.model_validate({"name": "forty", "budget_kw": 1300, "reserve_kw": 10,
                                        "circuits": circuits, "miners": miners, "gpu_nodes": gpus})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--mip", action="store_true")
    parser.add_argument("--switching", action="store_true", help="boot, wear and min down in the optimum")
    parser.add_argument("--window-hours", type=float, default=24.0)
    parser.add_argument("--overlap-hours", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--whole", action="store_true", help="also solve the whole horizon at once")
    parser.add_argument("--trace", type=Path, default=ROOT / "simulators" / "traces" / "four_cp_summer_month.csv")
    args = parser.parse_args()
    site = forty_groups()
    full = load_trace(args.trace)
    print(f"site: {len(site.miners) + len(site.gpu_nodes)} groups, "
          f"{sum(g.count for g in site.miners)} miners, {sum(g.count for g in site.gpu_nodes)} GPU nodes; "
          f"{'MIP' if args.mip else 'LP'}, switching physics {'on' if args.switching else 'off'}")
    runs = [(3, None), (3, args.window_hours), (args.days, args.window_hours)]
    if args.whole:
        runs.append((args.days, None))
    for days, window in runs:
        trace = full.first_days(days)
        began = time.perf_counter()
        best = solve_optimum(site, trace, integer=args.mip, switching=args.switching, window_hours=window,
                             overlap_hours=args.overlap_hours, workers=args.workers)
        total = time.perf_counter() - began
        how = "whole" if window is None else f"{best.windows} windows of {window:g} h (+{args.overlap_hours:g} h)"
        print(f"{days:4g} days ({len(trace.rows):5d} steps), {how:>28s}: {best.columns:8d} columns x "
              f"{best.rows:8d} rows; wall {total:7.2f} s (build {best.build_seconds:6.2f} s, solve "
              f"{best.solve_seconds:7.2f} s summed); bound ${best.bound_usd:,.2f} ({best.status})")


if __name__ == "__main__":
    main()
