"""Every built-in policy beside the hindsight optimum on every shipped 5-minute trace.

For each trace: the LP optimum (the proven bound, switching physics on), then each policy's
margin within limits as a share of it, its wall time, its starts and interruptions and, for
``lookahead``, how many of its decisions fell back to merit-order (a late or failed plan). The
peers are measured in the same run: merit-order and strike-price decide the same steps.

    python benchmarks/policies_vs_optimum.py [--traces a,b] [--policies merit-order,lookahead]
        [--site deploy/backtest-site.yaml] [--notice-hours 2] [--jobs 2]

Each (trace, policy) runs in a process of its own (``--jobs`` at once): a 30-day trace takes
lookahead a few minutes, merit-order seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from wattshift.daemon.backtest.optimum import solve_optimum
from wattshift.daemon.backtest.replay import run_backtest
from wattshift.daemon.backtest.site import load_backtest_site
from wattshift.daemon.backtest.trace import load_trace
from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Allocation, Policy, carried, forecast_seconds
from wattshift.policies.catalog import make_policy

ROOT = Path(__file__).resolve().parents[1]
TRACES = ("power_spike_day", "gpu_plateau_training", "negative_prices_week", "four_cp_windows_week",
          "gpu_demand_week", "hashprice_2024_2026", "low_hashprice_month", "four_cp_summer_month")
POLICIES = ("merit-order", "strike-price", "lookahead")


class Counting:
    """The policy, counting the decisions lookahead handed to merit-order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = carried(policy)
        self.name = policy.name
        self.fallbacks = 0
        self.forecast_seconds = forecast_seconds(self.policy)

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        allocation = self.policy.decide(snapshot)
        if "merit-order decides" in allocation.summary:
            self.fallbacks += 1
        return allocation


def replay(job: tuple[str, str, str, float]) -> dict[str, Any]:
    site_file, trace_name, policy_name, notice_hours = job
    site = load_backtest_site(Path(site_file))
    trace = load_trace(ROOT / "simulators" / "traces" / f"{trace_name}.csv")
    policy = Counting(make_policy(policy_name, {}))
    began = time.perf_counter()
    result = run_backtest(site, policy, trace, keep_records=False, notice_seconds=notice_hours * 3600)
    t = result.totals
    return {"trace": trace_name, "policy": policy_name, "margin": result.margin_within_limits_usd,
            "violations": len(result.violations), "wall": time.perf_counter() - began, "starts": t.miner_starts,
            "breaks": t.min_up_breaks, "interruptions": t.job_interruptions, "fallbacks": policy.fallbacks,
            "decisions": result.decide_calls}


def bound(job: tuple[str, str]) -> tuple[str, float]:
    site_file, trace_name = job
    site = load_backtest_site(Path(site_file))
    trace = load_trace(ROOT / "simulators" / "traces" / f"{trace_name}.csv")
    return trace_name, solve_optimum(site, trace).bound_usd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=",".join(TRACES))
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--site", default=str(ROOT / "deploy" / "backtest-site.yaml"))
    parser.add_argument("--notice-hours", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    traces, policies = args.traces.split(","), args.policies.split(",")
    # Spawned: a fork of a process whose HiGHS threads already run can deadlock.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        bounds_f = {pool.submit(bound, (args.site, t)): t for t in traces}
        runs_f = [pool.submit(replay, (args.site, t, p, args.notice_hours)) for t in traces for p in policies]
        bounds: dict[str, float] = {}
        for f in as_completed(bounds_f):
            name, value = f.result()
            bounds[name] = value
            print(f"optimum of {name}: ${value:,.2f}", file=sys.stderr, flush=True)
        runs = []
        for f in as_completed(runs_f):
            runs.append(f.result())
            print(f"{len(runs)}/{len(runs_f)}: {runs[-1]['policy']} on {runs[-1]['trace']} in "
                  f"{runs[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    order = {(t, p): i for i, (t, p) in enumerate((t, p) for t in traces for p in policies)}
    runs.sort(key=lambda r: order[(r["trace"], r["policy"])])
    if args.json:
        print(json.dumps({"bounds": bounds, "runs": runs}, indent=2))
        return
    print(f"{'trace':24} {'policy':13} {'ratio':>8} {'margin $':>10} {'optimum $':>10} {'wall s':>7} "
          f"{'starts':>6} {'breaks':>6} {'intr':>5} {'fallback':>9} {'viol':>5}")
    for r in runs:
        ratio = r["margin"] / bounds[r["trace"]] if bounds[r["trace"]] > 0 else float("nan")
        print(f"{r['trace']:24} {r['policy']:13} {ratio:8.2%} {r['margin']:10.2f} {bounds[r['trace']]:10.2f} "
              f"{r['wall']:7.1f} {r['starts']:6d} {r['breaks']:6d} {r['interruptions']:5d} "
              f"{r['fallbacks']:4d}/{r['decisions']:<4d} {r['violations']:5d}", flush=True)

if __name__ == "__main__":
    main()
