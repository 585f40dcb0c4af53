"""``wattshift demo``: the daemon on a simulated site, with a live status view."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.control.controller import Controller, TickReport
from wattshift.daemon.control.earnings import class_earnings
from wattshift.daemon.demo.agents import agents_line, demo_agents, through_agents
from wattshift.daemon.demo.mqtt import (
    BROKER_HOST,
    MqttMode,
    demo_broker,
    instructions,
    mqtt_block,
)
from wattshift.daemon.demo.scenario import (
    Ledger,
    LimitsToMeet,
    Scenario,
    sample_forever,
)
from wattshift.daemon.runtime.app import open_daemon
from wattshift.daemon.runtime.controls import Controls, operator_controls
from wattshift.model.snapshot import DeviceClass
from wattshift.simulators.broker import BrokerUnavailable
from wattshift.simulators.gpu_site import SimulatedGpuSite
from wattshift.simulators.site import SimulatedSite, TruthMonitor
from wattshift.simulators.site_meter import SimulatedMeter


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
    demo.add_argument("--mqtt", choices=("auto", "on", "off"), default="auto",
                      help="a private Mosquitto, the daemon on it and a simulated site meter: "
                           "auto (default) when mosquitto is installed, on, or off")
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
                                        until_interrupted=args.duration is None, mqtt=args.mqtt))
        except KeyboardInterrupt:
            return 130
        except BrokerUnavailable as err:
            print(err, file=sys.stderr)
            return 2


async def run_demo(scenario: Scenario, state_dir: Path, metrics_listen: str, out: TextIO,
                   *, until_interrupted: bool = False, mqtt: MqttMode = "off", mqtt_host: str = BROKER_HOST) -> int:
    # A cold start (say, after a grid outage): every miner idle until the daemon wakes it.
    sim = SimulatedSite(scenario.batches(), first_address=scenario.first_address, seed=7, start_asleep=True)
    print(f"starting {len(sim.miners)} simulated miners on {scenario.first_address} and up ...", file=out, flush=True)
    gpus = SimulatedGpuSite(scenario.gpu_specs(), seed=7) if scenario.gpu_nodes else None
    runner = scenario.runner() if gpus is not None else None
    async with sim, contextlib.AsyncExitStack() as stack:
        # Ctrl-C or SIGTERM, even during start-up, ends the run with its summary and its clean-up.
        interrupted = await stack.enter_async_context(_until_signalled())
        if gpus is not None and runner is not None:
            stack.enter_context(gpus)
            gpus.follow(runner)
            print(f"starting {len(gpus.nodes)} simulated 8x H100 nodes under the simulated NVML library; "
                  f"{len(scenario.jobs())} AI jobs will arrive", file=out, flush=True)
        broker = await stack.enter_async_context(demo_broker(mqtt, mqtt_host, out))
        scenario.write_policy_file(state_dir)
        site_file = scenario.site_file(sim, state_dir, metrics_listen, gpus,
                                       mqtt=mqtt_block(broker, scenario.tick_s) if broker else None)
        if broker is not None and gpus is not None:
            # A GPU server is another machine: the first node's cards are read and capped through its agent.
            agents = await stack.enter_async_context(demo_agents(
                gpus, through_agents(site_file["gpu_nodes"]), broker, scenario.tick_s))
            print(agents_line(agents, broker), file=out, flush=True)
        site = SiteConfig.model_validate(site_file)
        started_wall = datetime.now(UTC)
        budget = scenario.budget(site, started_wall)
        unmetered = scenario.unmetered_watts(site, metered=broker is not None)
        ledger = Ledger(sim, gpus, unmetered_watts=unmetered)
        # Two ticks to see a cut and act on it, ten seconds for miners to ramp down.
        to_meet = LimitsToMeet(budget, site.circuit_limits(), response_seconds=2 * scenario.tick_s + 10)
        truth = TruthMonitor(sim, site.circuit_parents(), to_meet, gpus=gpus, unmetered_watts=unmetered)
        if broker is not None and site.mqtt is not None and site.mqtt.meter is not None:
            meter = SimulatedMeter(lambda: truth.true_watts_by_circuit()["site"], broker.host, broker.port,
                                   site.mqtt.meter.topic, interval=min(1.0, scenario.tick_s))
            await stack.enter_async_context(meter)
        async with (
            open_daemon(site, base_dir=Path("."), budget=budget, serve_metrics=True, runner=runner) as daemon,
            operator_controls(daemon, site, state_dir) as controls,
        ):
            if broker is not None and controls.bridge is not None:
                # Only once the daemon listens: a command sent on reading this line must not be lost.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await controls.bridge.connected.wait()
                print(instructions(broker, unmetered / 1000, site.budget_watts * 0.5 / 1000), file=out, flush=True)
            print(f"identified miners; metrics on http://{metrics_listen}/metrics; journal in {state_dir}",
                  file=out, flush=True)
            if controls.reloader is not None:
                print(f"policy file {controls.reloader.path}: edit it, or `kill -HUP {os.getpid()}`, to reload",
                      file=out, flush=True)
            stop = asyncio.Event()
            loop_task = asyncio.create_task(daemon.controller.run(stop))
            sampler = asyncio.create_task(sample_forever(ledger, to_meet))
            started = time.monotonic()
            try:
                async with truth:
                    while time.monotonic() - started < scenario.duration_s and not interrupted.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                await interrupted.wait()
                        report = daemon.controller.last_report
                        if report is not None:
                            ledger.hashprice = report.snapshot.prices.hashprice_usd_per_ph_day or 0.0
                            ledger.power_price = report.snapshot.prices.power_usd_per_mwh or 0.0
                            ledger.ai_usd_per_hour = class_earnings(report.snapshot)[DeviceClass.GPU].usd_per_hour
                        _draw(out, truth, site, budget, ledger, report, time.monotonic() - started, scenario,
                              _link_line(daemon.controller, controls))
            finally:
                stop.set()
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await loop_task
            commands, failures = daemon.controller.commands_sent, daemon.controller.command_failures
            link = _link_summary(daemon.controller, controls, unmetered)
    print(_summary(ledger, truth, site, commands, failures, time.monotonic() - started, link), file=out, flush=True)
    over = truth.excursions
    return 0 if not over or until_interrupted else 1


@contextlib.asynccontextmanager
async def _until_signalled() -> AsyncIterator[asyncio.Event]:
    """An event set by Ctrl-C or SIGTERM: the demo then stops as if its time were up, prints
    its summary, and takes down what it started (the simulators, the private broker)."""
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        yield interrupted
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _link_line(controller: Controller, controls: Controls) -> str | None:
    """The MQTT link and the site meter, for the status view."""
    bridge = controls.bridge
    if bridge is None:
        return None
    parts = [f"MQTT {'connected' if bridge.connected.is_set() else 'DISCONNECTED'}, "
             f"{bridge.verdicts['accepted']} commands accepted, {bridge.verdicts['rejected']} rejected"]
    reading = controller.meter.latest() if controller.meter is not None else None
    if reading is not None:
        parts.append(f"meter {reading.watts / 1000:.1f} kW{' (STALE)' if reading.stale else ''}, "
                     f"overhead learned {controller.overhead.watts / 1000:.1f} kW")
    return "   ".join(parts)


def _link_summary(controller: Controller, controls: Controls, unmetered_watts: float) -> str | None:
    bridge = controls.bridge
    if bridge is None:
        return None
    return (f"  MQTT: {bridge.connections} connection(s), commands {bridge.verdicts['accepted']} accepted and "
            f"{bridge.verdicts['rejected']} rejected; site meter overhead learned "
            f"{controller.overhead.watts / 1000:.1f} kW (true {unmetered_watts / 1000:.1f} kW)")


def _draw(out: TextIO, truth: TruthMonitor, site: SiteConfig, budget: Any, ledger: Ledger,
          report: TickReport | None, elapsed: float, scenario: Scenario, link: str | None) -> None:
    now = datetime.now(UTC)
    in_force = budget.at(now)
    planning = budget.in_force(now)
    truths = truth.true_watts_by_circuit()
    miners = truth.site.miners
    on = sum(1 for m in miners if m.physics.mining)
    ths = sum(m.physics.hashrate_ths() for m in miners)
    lines = [
        f"wattshift demo  t={elapsed:5.1f}/{scenario.duration_s:g} s   budget {in_force / 1000:7.1f} kW"
        + (f"  (planning for {planning / 1000:.1f} kW: curtailment ahead)" if planning < in_force else ""),
        f"true draw {truths['site'] / 1000:7.1f} kW   peak {ledger.peak_watts / 1000:7.1f} kW   "
        f"headroom {(in_force - truths['site']) / 1000:6.1f} kW",
    ]
    for circuit, limit in site.circuit_limits().items():
        if circuit != "site":
            lines.append(f"  {circuit:<14} {truths[circuit] / 1000:7.1f} of {limit / 1000:7.1f} kW")
    lines.append(f"miners on {on}/{len(miners)}   hashrate {ths / 1000:6.2f} PH/s   "
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
    if link is not None:
        lines.append(link)
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
             seconds: float, link: str | None) -> str:
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
        f"{site.budget_watts / 1000:.1f} kW; least headroom to the budget it had to meet: "
        f"{-ledger.peak_over_budget_watts / 1000:.1f} kW",
        *([link] if link else []),
        f"  verdict: {verdict}",
    ])
