"""How long one decision takes on a large site: ``policy.decide`` plus ``plan_transition`` on a
site of 10,000 miners and 500 GPU nodes, beside two peers measured in the same run: the per-load
reference path of the same policy (``decide_per_load``: one ladder and one heap entry per load,
the path before cohorts; it must give the same allocation, and the run checks that it does), one
pass of ``worst_case_watts`` over every load (the least any decision must read), and making every
load's state anew from its fields, as each snapshot does (where a load's worst case, state and
idle draw are worked out, once). A baseline of 1,000 miners says how the cost scales.

The snapshots come from the back-test's site model (every miner mining, every GPU node with a
running job, prices where part of the fleet is worth switching off), so the policy does real
work: water-filling across every load and every circuit. The ratio per load says how the cost
scales (1.0: linear in the number of loads), and holds on a noisy machine where seconds do not.

    python benchmarks/decide_scale.py [--miners 10000] [--gpu-nodes 500] [--repeat 7] [--cpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from wattshift.daemon.backtest.site import BacktestSite
from wattshift.daemon.backtest.site_model import SiteModel
from wattshift.daemon.control.sequencer import plan_transition
from wattshift.model.snapshot import Prices, SiteSnapshot
from wattshift.policies.base import Allocation
from wattshift.policies.catalog import make_policy
from wattshift.policies.merit_order import MeritOrderPolicy

# The clock every figure is read on: wall time, or with --cpu this process's CPU time
# (time.process_time), which the other processes of a shared machine do not inflate.
clock = time.perf_counter

MODELS = ("Antminer S21", "Antminer S19 XP", "Whatsminer M60S", "Whatsminer M50S")
PER_CONTAINER = 100  # miners per container (PDU); ten containers per transformer


def big_site(miners: int, gpu_nodes: int) -> BacktestSite:
    containers = max(1, miners // PER_CONTAINER)
    transformers = max(1, containers // 10)
    circuits = [
        {"name": f"tx-{t}", "limit_kw": 360.0 * 10,
         "circuits": [{"name": f"c-{t}-{c}", "limit_kw": 360.0} for c in range(10) if t * 10 + c < containers]}
        for t in range(transformers)
    ]
    groups = [{"model": MODELS[c % len(MODELS)], "count": PER_CONTAINER if miners >= PER_CONTAINER else miners,
               "circuit": f"c-{c // 10}-{c % 10}"} for c in range(containers)]
    gpu = [{"count": gpu_nodes, "circuit": "tx-0"}] if gpu_nodes else []
    budget = miners * 3.4 + gpu_nodes * 7.2 * 0.9  # a little short of everything at full power
    return BacktestSite.model_validate({"name": "big", "budget_kw": budget, "circuits": circuits,
                                        "miners": groups, "gpu_nodes": gpu})


def snapshot(site: BacktestSite) -> SiteSnapshot:
    model = SiteModel(site)
    prices = Prices(45.0, 70.0, gpu_rates_usd_per_gpu_hour={"H100": 2.2})
    model.set_gpu_work(len(model.gpu_nodes), 2.2)
    # Let the fleet come up once, then decide from there: a running site, not a cold one.
    first = model.snapshot(at=datetime(2025, 8, 1, tzinfo=UTC), clock=0.0, budget_watts=site.budget_watts,
                           prices=prices)
    policy = make_policy("merit-order", {})
    for _ in range(4):
        plan = plan_transition(first, policy.decide(first))
        model.apply(plan.now, 0.0)
        model.advance(15, hashprice=45.0, power_price=70.0, limits=site.circuit_limits())
        first = model.snapshot(at=datetime(2025, 8, 1, tzinfo=UTC), clock=1000.0, budget_watts=site.budget_watts,
                               prices=prices)
    # Then a price rise: the least efficient part of the fleet should go off.
    return model.snapshot(at=datetime(2025, 8, 1, tzinfo=UTC), clock=2000.0, budget_watts=site.budget_watts,
                          prices=Prices(45.0, 105.0, gpu_rates_usd_per_gpu_hour={"H100": 2.2}))


def once(decide: Callable[[SiteSnapshot], Allocation], snap: SiteSnapshot) -> tuple[float, float, int]:
    t0 = clock()
    allocation = decide(snap)
    t1 = clock()
    plan = plan_transition(snap, allocation)
    t2 = clock()
    return t1 - t0, t2 - t1, len(plan.now) + len(plan.deferred)


def summarise(times: list[tuple[float, float, int]], snap: SiteSnapshot) -> dict[str, Any]:
    """The best of the runs (the machine's noise only ever adds), and the median beside it."""
    loads = len(snap.loads)
    totals = [d + p for d, p, _ in times]
    best = min(range(len(times)), key=totals.__getitem__)
    return {"loads": loads, "miners": len(snap.miners), "gpu_nodes": len(snap.gpu_nodes), "runs": len(times),
            "decide_ms": round(times[best][0] * 1000, 1), "plan_ms": round(times[best][1] * 1000, 1),
            "total_ms": round(totals[best] * 1000, 1), "median_total_ms": round(statistics.median(totals) * 1000, 1),
            "us_per_load": round(totals[best] / loads * 1e6, 1), "steps": times[best][2]}


def read_pass_s(snap: SiteSnapshot) -> float:
    """One pass of ``worst_case_watts`` over every load: the floor any decision stands on."""
    t0 = clock()
    for load in snap.loads:
        load.worst_case_watts  # noqa: B018 - the read is what is timed
    return clock() - t0


def remake_pass_s(snap: SiteSnapshot) -> float:
    """Every load's state made anew from its fields, as a snapshot makes them each tick."""
    fields = {kind: attrgetter(*(f.name for f in dataclasses.fields(kind) if f.init))
              for kind in {type(load) for load in snap.loads}}
    made = [(type(load), fields[type(load)](load)) for load in snap.loads]
    t0 = clock()
    for kind, values in made:
        kind(*values)
    return clock() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=10_000)
    parser.add_argument("--gpu-nodes", type=int, default=500)
    parser.add_argument("--baseline-miners", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="time in this process's CPU time, not wall time")
    args = parser.parse_args()
    if args.cpu:
        global clock
        clock = time.process_time
    policy = MeritOrderPolicy()  # what make_policy("merit-order", {}) gives, with its reference path
    small, big = snapshot(big_site(args.baseline_miners, 0)), snapshot(big_site(args.miners, args.gpu_nodes))
    fast, reference = policy.decide(big), policy.decide_per_load(big)
    if fast.targets != reference.targets or fast.summary != reference.summary:
        raise SystemExit("the cohort path and the per-load path disagree: fix that before timing anything")
    baseline = summarise([once(policy.decide, small) for _ in range(args.repeat * 4)], small)
    # Interleaved, so both paths and the read pass see the same load on a shared machine.
    fast_runs, reference_runs, reads, remakes = [], [], [], []
    for run in range(args.repeat):
        fast_runs.append(once(policy.decide, big))
        if run % 2 == 0:
            reference_runs.append(once(policy.decide_per_load, big))
        reads.append(read_pass_s(big))
        remakes.append(remake_pass_s(big))
    large, per_load = summarise(fast_runs, big), summarise(reference_runs, big)
    reads_ms, remake_ms = round(min(reads) * 1000, 1), round(min(remakes) * 1000, 1)
    result = {"baseline": baseline, "large": large, "per_load_reference": per_load,
              "worst_case_pass_ms": reads_ms, "remake_states_ms": remake_ms,
              "speedup": round(per_load["total_ms"] / large["total_ms"], 1),
              "scaling": round(large["us_per_load"] / baseline["us_per_load"], 2)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, r in (("baseline", baseline), ("large", large), ("per-load", per_load)):
        print(f"{name:8s} {r['miners']:6d} miners + {r['gpu_nodes']:3d} GPU nodes: decide {r['decide_ms']:8.1f} ms, "
              f"plan {r['plan_ms']:6.1f} ms, total {r['total_ms']:8.1f} ms (best of {r['runs']}; median "
              f"{r['median_total_ms']:.1f}), "
              f"{r['us_per_load']:.1f} us per load, {r['steps']} steps planned")
    print(f"peer: one pass of worst_case_watts over the {large['loads']} loads: {reads_ms:.1f} ms (best); "
          f"decide + plan = {large['total_ms'] / max(reads_ms, 1e-9):.1f} such passes")
    print(f"peer: making the {large['loads']} load states anew, as a snapshot does: {remake_ms:.1f} ms (best)")
    print(f"cohort path {result['speedup']}x faster than the per-load reference, same allocation; "
          f"per-load cost, large / baseline: {result['scaling']}x (1.0 = linear)")


if __name__ == "__main__":
    main()
