"""``wattshift demo``: the daemon on a simulated site, with a live status view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from wattshift.simulators.gpu_site import SimulatedGpuSite
from wattshift.simulators.site import SimulatedSite, TruthMonitor

from .app import open_daemon
from .config import SiteConfig
from .controller import TickReport
from .demo import Ledger, Scenario, sample_forever
from .earnings import class_earnings
from .model import DeviceClass
from .policy_reload import policy_reloading


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="run the daemon on a built-in simulated site")
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds to run, then print a summary and exit (default: until Ctrl-C)")
    demo.add_argument("--miners", type=int, default=240, help="simulated miners (default 240)")
    demo.add_argument("--gpu-nodes", type=int, default=Scenario.gpu_nodes,
                      help=f"simulated 8x H100 servers (default {Scenario.gpu_nodes}; 0 for none)")
    demo.add_argument("--tick", type=float, default=5.0, help="control-loop interval in seconds")
    demo.add_argument("--metrics-listen", default="127.0.0.1:9464", help="where to serve /metrics")
    demo.add_argument("--state-dir", type=Path, default=None, help="journal location (default: a temp dir)")
    demo.add_argument("--first-address", default=Scenario.first_address,
                      help=f"loopback address of the first simulated miner (default {Scenario.first_address})")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.miners < 4 or args.miners > 5000:
        print(f"--miners {args.miners}: choose between 4 and 5000", file=sys.stderr)
        return 2
    duration = args.duration if args.duration is not None else 3600.0
    if not 0 <= args.gpu_nodes <= 64:
        print(f"--gpu-nodes {args.gpu_nodes}: choose between 0 and 64", file=sys.stderr)
        return 2
    scenario = Scenario(miners=args.miners, duration_s=duration, tick_s=args.tick, first_address=args.first_address,
                        gpu_nodes=args.gpu_nodes)
    with tempfile.TemporaryDirectory(prefix="wattshift-demo-") as tmp:
        state_dir = args.state_dir or Path(tmp)
        try:
            return asyncio.run(run_demo(scenario, state_dir, args.metrics_listen, sys.stdout,
                                        until_interrupted=args.duration is None))
        except KeyboardInterrupt:
            return 130


async def run_demo(scenario: Scenario, state_dir: Path, metrics_listen: str, out: TextIO,
                   *, until_interrupted: bool = False) -> int:
    # A cold start (say, after a grid outage): every miner idle until the daemon wakes it.
    sim = SimulatedSite(scenario.batches(), first_address=scenario.first_address, seed=7, start_asleep=True)
    print(f"starting {len(sim.miners)} simulated miners on {scenario.first_address} and up ...", file=out, flush=True)
    gpus = SimulatedGpuSite(scenario.gpu_specs(), seed=7) if scenario.gpu_nodes else None
    runner = scenario.runner() if gpus is not None else None
    async with sim, contextlib.AsyncExitStack() as stack:
        if gpus is not None and runner is not None:
            stack.enter_context(gpus)
            gpus.follow(runner)
            print(f"starting {len(gpus.nodes)} simulated 8x H100 nodes under the simulated NVML library; "
                  f"{len(scenario.jobs())} AI jobs will arrive", file=out, flush=True)
        scenario.write_policy_file(state_dir)
        site = SiteConfig.model_validate(scenario.site_file(sim, state_dir, metrics_listen, gpus))
        started_wall = datetime.now(UTC)
        budget = scenario.budget(site, started_wall)
        ledger = Ledger(sim, gpus)
        limits = site.circuit_limits()
        truth = TruthMonitor(sim, site.circuit_parents(), lambda: budget.limits_at(limits, datetime.now(UTC)),
                             gpus=gpus)
        async with (
            open_daemon(site, base_dir=Path("."), budget=budget, serve_metrics=True, runner=runner) as daemon,
            policy_reloading(daemon.controller, site, state_dir, daemon.metrics.registry) as reloading,
        ):
            print(f"identified miners; metrics on http://{metrics_listen}/metrics; journal in {state_dir}",
                  file=out, flush=True)
            if reloading is not None:
                print(f"policy file {reloading.path}: edit it, or `kill -HUP {os.getpid()}`, to reload",
                      file=out, flush=True)
            stop = asyncio.Event()
            loop_task = asyncio.create_task(daemon.controller.run(stop))
            sampler = asyncio.create_task(sample_forever(ledger, budget))
            started = time.monotonic()
            try:
                async with truth:
                    while time.monotonic() - started < scenario.duration_s:
                        await asyncio.sleep(1.0)
                        report = daemon.controller.last_report
                        if report is not None:
                            ledger.hashprice = report.snapshot.prices.hashprice_usd_per_ph_day or 0.0
                            ledger.power_price = report.snapshot.prices.power_usd_per_mwh or 0.0
                            ledger.ai_usd_per_hour = class_earnings(report.snapshot)[DeviceClass.GPU].usd_per_hour
                        _draw(out, sim, site, budget, ledger, report, time.monotonic() - started, scenario)
            finally:
                stop.set()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await loop_task
            commands, failures = daemon.controller.commands_sent, daemon.controller.command_failures
    print(_summary(ledger, truth, site, commands, failures, time.monotonic() - started), file=out, flush=True)
    over = truth.excursions
    return 0 if not over or until_interrupted else 1


def _draw(out: TextIO, sim: SimulatedSite, site: SiteConfig, budget: Any, ledger: Ledger,
          report: TickReport | None, elapsed: float, scenario: Scenario) -> None:
    now = datetime.now(UTC)
    in_force = budget.at(now)
    planning = budget.in_force(now)
    truths = sim.true_watts_by_circuit(site.circuit_parents())
    on = sum(1 for m in sim.miners if m.physics.mining)
    ths = sum(m.physics.hashrate_ths() for m in sim.miners)
    lines = [
        f"wattshift demo  t={elapsed:5.1f}/{scenario.duration_s:g} s   budget {in_force / 1000:7.1f} kW"
        + (f"  (planning for {planning / 1000:.1f} kW: curtailment ahead)" if planning < in_force else ""),
        f"true draw {truths['site'] / 1000:7.1f} kW   peak {ledger.peak_watts / 1000:7.1f} kW   "
        f"headroom {(in_force - truths['site']) / 1000:6.1f} kW",
    ]
    for circuit, limit in site.circuit_limits().items():
        if circuit != "site":
            lines.append(f"  {circuit:<14} {truths[circuit] / 1000:7.1f} of {limit / 1000:7.1f} kW")
    lines.append(f"miners on {on}/{len(sim.miners)}   hashrate {ths / 1000:6.2f} PH/s   "
                 f"earning ${ths / 1000 * ledger.hashprice:,.0f}/day at ${ledger.hashprice:.2f}/PH/day")
    if report is not None and report.snapshot.gpu_nodes:
        earned = class_earnings(report.snapshot)
        running = sum(1 for n in report.snapshot.gpu_nodes if n.reads_on)
        rate = next(iter(report.snapshot.prices.gpu_rates_usd_per_gpu_hour.values()), 0.0)
        for kind, label in ((DeviceClass.MINER, "mining"), (DeviceClass.GPU, "AI    ")):
            e = earned[kind]
            lines.append(f"{label} {e.watts / 1000:7.1f} kW  ${e.usd_per_hour:8,.2f}/h  "
                         f"${e.usd_per_mwh or 0:7,.0f}/MWh")
        lines.append(f"GPU nodes running a job {running}/{len(report.snapshot.gpu_nodes)}; "
                     f"H100 market ${rate:.2f}/GPU-h")
    if report is not None:
        lines.append(f"last tick {report.seconds:4.1f} s: {len(report.results)} commands, "
                     f"{len(report.failures)} failed; {report.allocation.summary}")
    text = "\n".join(lines)
    if out.isatty():
        out.write("\x1b[H\x1b[J" + text + "\n")
    elif int(elapsed) % 5 == 0:
        out.write(text.splitlines()[1] + f"  t={elapsed:.0f}s\n")
    out.flush()


def _summary(ledger: Ledger, truth: TruthMonitor, site: SiteConfig, commands: int, failures: int,
             seconds: float) -> str:
    worst = max(truth.excursions, key=lambda e: e.watts - e.limit, default=None)
    verdict = (
        "never over any limit"
        if worst is None
        else f"OVER: {worst.circuit} reached {worst.watts / 1000:.1f} kW against {worst.limit / 1000:.1f} kW"
    )
    margin = ledger.power_cost_usd
    return "\n".join([
        "",
        f"summary after {seconds:.0f} s ({truth.samples} samples of the true draw):",
        "  class  energy kWh  revenue $  power cost $  margin $",
        f"  miner  {ledger.energy_kwh:10.2f}  {ledger.revenue_usd:9.2f}  {margin:12.2f}  "
        f"{ledger.revenue_usd - margin:8.2f}",
        f"  gpu    {ledger.ai_energy_kwh:10.2f}  {ledger.ai_revenue_usd:9.2f}  {ledger.ai_power_cost_usd:12.2f}  "
        f"{ledger.ai_revenue_usd - ledger.ai_power_cost_usd:8.2f}",
        f"  commands {commands}, failures {failures}",
        f"  highest true site draw {ledger.peak_watts / 1000:.1f} kW; contract budget "
        f"{site.budget_watts / 1000:.1f} kW; least headroom to the budget in force: "
        f"{-ledger.peak_over_budget_watts / 1000:.1f} kW",
        f"  verdict: {verdict}",
    ])
