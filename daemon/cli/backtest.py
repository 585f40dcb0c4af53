"""``wattshift backtest``: replay a trace through a policy file and compare with hindsight.

    wattshift backtest --site deploy/backtest-site.yaml --policy POLICY.yaml \\
        --trace simulators/traces/power_spike_day.csv [--json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from wattshift.daemon.backtest.optimum import Optimum, OptimumError, solve_optimum
from wattshift.daemon.backtest.replay import DEFAULT_NOTICE_SECONDS, BacktestResult, run_backtest
from wattshift.daemon.backtest.site import BacktestSite, load_backtest_site
from wattshift.daemon.backtest.trace import TraceInvalid, load_trace
from wattshift.daemon.config.policy_file import load_policy_file
from wattshift.daemon.config.yamlfile import FileInvalid

from .common import EXIT_BAD_INPUT


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="replay a price/event trace through a policy and compare with the hindsight optimum",
        description="Replays the trace through the policy and the sequencer on an in-process model "
        "of the site, then solves the hindsight optimum (HiGHS) for the same trace and limits. "
        "Trace format: docs/backtest.md.",
    )
    parser.add_argument("--site", type=Path, required=True, metavar="FILE",
                        help="back-test site file (deploy/backtest-site.yaml) or a real site file")
    parser.add_argument("--policy", type=Path, required=True, metavar="FILE", help="policy file")
    parser.add_argument("--trace", type=Path, required=True, metavar="CSV", help="trace of prices and events")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG of prices, allocation and budget")
    parser.add_argument("--no-optimum", action="store_true", help="skip the hindsight optimum")
    parser.add_argument("--mip", action="store_true",
                        help="integer on-counts in the optimum (tighter, slower); default: LP upper bound")
    parser.add_argument("--notice-hours", type=float, metavar="H", default=DEFAULT_NOTICE_SECONDS / 3600,
                        help="how long before it starts a trace's budget event is announced to a planning "
                        "policy (default %(default)g h)")
    parser.add_argument("--window-hours", type=float, metavar="H",
                        help="solve the optimum in windows of H hours (still an upper bound; docs/backtest.md)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        site = load_backtest_site(args.site)
        policy = load_policy_file(args.policy)  # the daemon's own loader: windows and plug-ins too
        trace = load_trace(args.trace)
    except FileInvalid as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print("nothing was run", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TraceInvalid as err:
        print(err, file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 <= args.notice_hours <= 168:
        print(f"--notice-hours: {args.notice_hours:g} is outside 0..168", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = run_backtest(site, policy, trace, notice_seconds=args.notice_hours * 3600)
    optimum: Optimum | None = None
    if not args.no_optimum:
        try:
            optimum = solve_optimum(site, trace, integer=args.mip, window_hours=args.window_hours,
                                    workers=min(4, os.cpu_count() or 1))
        except OptimumError as err:
            print(f"hindsight optimum: {err}", file=sys.stderr)
        if optimum is not None and optimum.shortfall is not None:
            print(f"hindsight optimum: {optimum.shortfall.describe()}", file=sys.stderr)
    report = build_report(result, optimum)
    if args.plot:
        from wattshift.daemon.backtest.plot import plot_backtest

        total = [m + g for m, g in zip(optimum.miner_watts, optimum.gpu_watts, strict=True)] if optimum else None
        plot_backtest(result, site, args.plot, total)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report, site))
    return 1 if result.violations else 0


def build_report(result: BacktestResult, optimum: Optimum | None) -> dict[str, Any]:
    report: dict[str, Any] = {"backtest": result.summary(), "violations": result.violations[:20]}
    if optimum is not None:
        # The policy's money while over a limit does not count (the optimum keeps every limit it
        # can); a MIP is judged against its dual bound, which is above its true optimum.
        # A policy that broke a limit the optimum keeps could have bought its margin with it (a job
        # kept running through a cut): no ratio then, only its margin within limits.
        report["optimum"] = optimum.summary()
        unmet = optimum.shortfall.at if optimum.shortfall else frozenset()
        broken = sorted({v.split(": ", 1)[0] for v in result.violations} - unmet)
        comparable = not broken
        report["ratio_to_optimum"] = ratio(result.margin_within_limits_usd, optimum.bound_usd) if comparable else None
        if optimum.integer:
            report["ratio_to_incumbent"] = (
                ratio(result.margin_within_limits_usd, optimum.margin_usd) if comparable else None)
        if broken:
            report["ratio_undefined"] = (f"the policy broke a limit at {len(broken)} step(s) where the optimum "
                                         f"keeps it (first {broken[0]}): not comparable")
    return report


def ratio(margin: float, best: float) -> float | None:
    """Margin over the optimum's; undefined when the optimum itself makes no money."""
    return round(margin / best, 5) if best > 0 else None


def render(report: dict[str, Any], site: BacktestSite) -> str:
    b = report["backtest"]
    lines = [
        f"back-test of {b['policy']} on {b['site']} ({len(site.miners)} miner group(s), "
        f"{sum(g.count for g in site.gpu_nodes)} GPU node(s)): {b['trace']}",
        f"  {b['steps']} steps of {b['step_seconds']:.0f} s ({b['hours']:.1f} h), "
        f"{b['wall_seconds']:.2f} s wall ({b['steps_per_second']} steps/s)",
        f"  energy        {b['energy_mwh']:10.3f} MWh  "
        f"(miners {b['miner_energy_mwh']:.3f}, GPU nodes {b['gpu_energy_mwh']:.3f})",
        f"  revenue       ${b['revenue_usd']:10,.2f}  "
        f"(mining ${b['mining_revenue_usd']:,.2f}, AI ${b['ai_revenue_usd']:,.2f})",
        f"  power cost    ${b['power_cost_usd']:10,.2f}",
        f"  switching     ${b['switching_cost_usd']:10,.2f}  ({b['miner_switches']} miner on/off, "
        f"{b['gpu_starts']} job starts, {b['job_interruptions']} job interruptions)",
        f"  miner wear    ${b['wear_cost_usd']:10,.2f}  ({b['miner_starts']} starts; {b['refused_starts']} refused "
        f"within the minimum down time, {b['min_up_breaks']} stops within the minimum up time)",
        f"  margin        ${b['margin_usd']:10,.2f}",
        f"  violations    {b['limit_violations']:10d}",
    ]
    lines += [f"    {v}" for v in report["violations"][:5]]
    if b["limit_violations"]:
        lines.append(f"  within limits ${b['margin_within_limits_usd']:10,.2f}  "
                     f"(without ${b['revenue_over_limit_usd']:,.2f} earned in steps over a limit)")
    if "optimum" in report:
        o = report["optimum"]
        r = report["ratio_to_optimum"]
        lines.append(f"  optimum       ${o['margin_usd']:10,.2f}  ({o['kind']}; {o['columns']} columns, "
                     f"{o['rows']} rows, solved in {o['solve_seconds']:.2f} s)")
        if o["mip_gap"] is not None:
            lines.append(f"  MIP bound     ${o['bound_usd']:10,.2f}  (incumbent above; gap {o['mip_gap']:.4%}, "
                         f"target {o['mip_rel_gap_target']:.4%}; the ratio is to the bound)")
        if o["shortfall"]:
            lines.append(f"  shortfall     {o['shortfall']}")
        why = report.get("ratio_undefined", "the optimum makes no money")
        lines.append(f"  ratio         {r:10.2%}" if r is not None else f"  ratio         undefined ({why})")
    return "\n".join(lines)
