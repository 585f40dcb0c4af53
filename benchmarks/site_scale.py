"""The daemon at site scale against simulated miners: start-up, memory, and the shed reaction.

For each fleet size, the simulated miners run in a process of their own
(``python -m wattshift.simulators.serve``) and the daemon side in another, fresh one (so its
memory is its own), assembled as ``wattshift run`` assembles it (``open_daemon``: journal,
metrics, policy, the real pyasic fleet). Measured, each beside a peer from the same run:

- start-up: identifying every miner (``firmware: auto``, pyasic's own identification; and with
  the firmware named in the site file, which skips the race), beside one raw CGMiner ``version``
  round trip to every miner under the same concurrency bound;
- memory: the daemon's resident set after its first tick, beside a bare interpreter that has
  imported the same modules (wattshift's daemon and pyasic);
- shed reaction: from a budget event received (``Controller.add_budget_event``, what the MQTT
  ``budget`` command calls) to every shed command acknowledged, beside one raw CGMiner round
  trip per shed command under the same bound. Twice, each cut taking a fifth of the first
  tick's draw: with the loop running (``Controller.run``), where the fast shed goes out from the
  last snapshot (``daemon/control/fast_shed.py``); and read-then-act, the tick alone
  (``run_once``: read the fleet, decide, send), as before the fast shed, with its read,
  decision and sends shown apart.

LuxOS simulators: the cheapest firmware to simulate and to poll (one multicommand), so 10,000
of them fit on a small machine beside the daemon; other firmwares cost more per miner (see
``benchmarks/telemetry_cycle.py``).

    python benchmarks/site_scale.py [--miners 1000 10000] [--json] [--profile]

At 10,000 miners a run takes about 15 minutes on two busy cores; ``--miners 1000`` about two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIRST_ADDRESS = "127.40.0.1"
CONCURRENCY = 100
# Imported by the peer and by the daemon side alike: what any daemon holds before its fleet.
MODULES = ("wattshift.daemon.runtime.app", "wattshift.drivers.pyasic_fleet")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def simulated(count: int) -> Iterator[list[str]]:
    """``count`` LuxOS miners in their own process; their addresses."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattshift.simulators.serve", "--firmware", "luxos", "--count", str(count),
         "--first-address", FIRST_ADDRESS],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield list(ready["hosts"])
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def raw_round_trips(hosts: list[str], command: str) -> float:
    """One CGMiner request and its whole answer per host, ``CONCURRENCY`` at a time: seconds."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(host: str) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(host, 4028)
            try:
                writer.write(json.dumps({"command": command}).encode())
                await writer.drain()
                await reader.read()
            finally:
                writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one(h) for h in hosts))
    return time.perf_counter() - started


def site_file(hosts: list[str], state_dir: str) -> dict[str, Any]:
    return {
        "name": "scale",
        "budget_kw": len(hosts) * 4.0,  # room for every miner at full power
        "miners": [{"addresses": f"{hosts[0]}-{hosts[-1]}", "firmware": "auto"}],
        "prices": {"power_usd_per_mwh": {"source": "fixed", "value": 40.0}},
        "policy": {"name": "merit-order", "options": {"min_dwell_seconds": 0}},
        "drivers": {"concurrency": CONCURRENCY},
        "state_dir": state_dir,
    }


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


async def hinted_startup(site: Any) -> tuple[float, int]:
    from wattshift.daemon.runtime.app import make_fleet
    from wattshift.daemon.runtime.startup import identify_miners
    from wattshift.drivers.base import DeviceError

    fleet = make_fleet(site.model_copy(update={"miners": [g.model_copy(update={"firmware": "luxos"})
                                                          for g in site.miners]}))
    try:
        seconds, found = await timed(lambda: identify_miners(fleet))
        return seconds, sum(1 for r in found.values() if not isinstance(r, DeviceError))
    finally:
        await fleet.close()


async def daemon_side(hosts: list[str], profile: bool = False) -> dict[str, Any]:
    """Runs in its own process (``--one``): start the daemon, tick once, shed. ``profile``:
    print where the shed tick's CPU goes (cProfile, to standard error)."""
    from wattshift.daemon.config.site import SiteConfig
    from wattshift.daemon.runtime.app import open_daemon
    from wattshift.model.budget import BudgetEvent

    out: dict[str, Any] = {"miners": len(hosts)}
    out["raw_version_s"] = await raw_round_trips(hosts, "version")
    with tempfile.TemporaryDirectory() as state:
        site = SiteConfig.model_validate(site_file(hosts, state))
        if site.miners[0].count() != len(hosts):
            raise SystemExit(f"the range names {site.miners[0].count()} miners, not {len(hosts)}")
        # The same start-up for an operator who names the firmware: no identification race,
        # each miner's driver is built and its capability read.
        out["startup_hinted_s"], out["identified_hinted"] = await hinted_startup(site)
        gc.collect()  # that fleet is gone before the daemon's memory is measured
        started = time.perf_counter()
        async with open_daemon(site, base_dir=Path(state)) as daemon:
            out["startup_s"] = time.perf_counter() - started
            controller = daemon.controller
            identified = sum(1 for d in controller.miner_ids if daemon.fleet.driver(d) is not None)
            out["identified"] = identified
            out["first_tick_s"], first = await timed(controller.run_once)
            out["rss_mb"] = rss_mb()
            draw = sum(m.measured_watts or 0.0 for m in first.snapshot.miners)
            # Instrument the tick's parts; the tick itself is the daemon's own.
            parts: dict[str, float] = {}
            observe, decide = controller.observe, controller.policy.decide

            async def observed(*args: Any, **kwargs: Any) -> Any:
                seconds, snapshot = await timed(lambda: observe(*args, **kwargs))
                parts.setdefault("read_s", seconds)
                return snapshot

            def decided(snapshot: Any) -> Any:
                t0 = time.perf_counter()
                allocation = decide(snapshot)
                parts.setdefault("decide_s", time.perf_counter() - t0)
                return allocation

            out.update(await fast_shed_reaction(controller, BudgetEvent("bench-fast", draw * 0.8, datetime.now(UTC))))
            controller.observe = observed  # type: ignore[method-assign]
            controller.policy.decide = decided  # type: ignore[method-assign]
            event = BudgetEvent("bench-shed", draw * 0.6, datetime.now(UTC))
            profiler = cProfile.Profile() if profile else None
            received, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            await controller.add_budget_event(event)
            report = await controller.run_once()
            out["shed_s"] = time.perf_counter() - received
            out["shed_cpu_s"] = time.process_time() - cpu
            if profiler is not None:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
            sheds = [r for r in report.results if r.step.is_shed]
            out["shed_commands"] = len(sheds)
            out["shed_acknowledged"] = sum(1 for r in sheds if r.ok)
            out["shed_read_s"] = parts.get("read_s")
            out["shed_decide_s"] = parts.get("decide_s")
            out["shed_send_s"] = max((r.seconds for r in sheds), default=0.0)
            out["rss_after_shed_mb"] = rss_mb()
            shed_hosts = [r.step.device_id for r in sheds]
        out["raw_shed_s"] = await raw_round_trips(shed_hosts, "summary") if shed_hosts else 0.0
        fast_hosts = out.pop("fast_hosts")
        out["raw_fast_s"] = await raw_round_trips(fast_hosts, "summary") if fast_hosts else 0.0
    return out


async def fast_shed_reaction(controller: Any, event: Any) -> dict[str, Any]:
    """The loop running, idle after its first tick: ``event`` received -> the fast shed's every
    command answered. The loop is stopped once the tick that follows the shed has run."""
    stop = asyncio.Event()
    before = controller.last_report
    loop = asyncio.create_task(controller.run(stop))
    try:
        while controller.last_report is before:  # the loop's own first tick
            await asyncio.sleep(0.05)
        received, cpu = time.perf_counter(), time.process_time()
        await controller.add_budget_event(event)
        while controller.last_fast_shed is None:
            if loop.done():
                raise SystemExit("the loop ended before the fast shed")
            await asyncio.sleep(0.005)
        seconds, cpu_s = time.perf_counter() - received, time.process_time() - cpu
        shed = controller.last_fast_shed
        after = controller.last_report
        while controller.last_report is after:  # the tick that follows: reads, confirms, may grant
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await loop
    sheds = [r for r in shed.results if r.step.is_shed]
    return {"fast_s": seconds, "fast_cpu_s": cpu_s, "fast_commands": len(sheds),
            "fast_acknowledged": sum(1 for r in sheds if r.ok), "fast_hosts": [r.step.device_id for r in sheds]}


def bare_rss_mb() -> float:
    code = (f"import {', '.join(MODULES)}\n"
            "from pathlib import Path\n"
            "print(next(int(l.split()[1]) for l in Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmRSS:')) / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def one_size(count: int, profile: bool) -> dict[str, Any]:
    with simulated(count) as hosts:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(hosts[:1] + hosts[-1:]),
                               "--count", str(count), *(["--profile"] if profile else [])],
                              check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the daemon side: first and last host
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="the shed tick's profile, to standard error")
    args = parser.parse_args()
    if args.one:
        logging.basicConfig(level=logging.WARNING)
        first, last = json.loads(args.one)
        from wattshift.daemon.config.site import expand_addresses

        hosts = list(expand_addresses(f"{first}-{last}"))
        print(json.dumps(asyncio.run(daemon_side(hosts, args.profile))))
        return
    results = {"bare_rss_mb": bare_rss_mb(), "sizes": [one_size(n, args.profile) for n in args.miners]}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"peer: a bare interpreter with {', '.join(MODULES)} imported: {results['bare_rss_mb']:.0f} MB resident")
    for r in results["sizes"]:
        n = r["miners"]
        print(f"{n:6d} LuxOS miners: start-up (identify all, firmware auto) {r['startup_s']:6.1f} s, "
              f"{r['identified']} identified; firmware named {r['startup_hinted_s']:6.1f} s, "
              f"{r['identified_hinted']} built; peer: one raw 'version' round trip each {r['raw_version_s']:5.1f} s")
        print(f"{'':6s}   resident after the first tick ({r['first_tick_s']:.1f} s) {r['rss_mb']:6.0f} MB, "
              f"{r['rss_mb'] - results['bare_rss_mb']:.0f} MB above the peer")
        print(f"{'':6s}   shed reaction, fast shed from the last snapshot (budget event -> "
              f"{r['fast_acknowledged']}/{r['fast_commands']} sheds acknowledged) {r['fast_s']:6.2f} s, "
              f"{r['fast_cpu_s']:.1f} s of CPU; peer: one raw round trip per shed {r['raw_fast_s']:5.2f} s")
        print(f"{'':6s}   shed reaction, read then act (budget event -> {r['shed_acknowledged']}/{r['shed_commands']} "
              f"sheds acknowledged) {r['shed_s']:6.2f} s = read {r['shed_read_s'] or 0:.2f} s + decide "
              f"{r['shed_decide_s'] or 0:.2f} s + the sends, {r['shed_cpu_s']:.1f} s of CPU; "
              f"peer: one raw round trip per shed {r['raw_shed_s']:5.2f} s")


if __name__ == "__main__":
    main()
