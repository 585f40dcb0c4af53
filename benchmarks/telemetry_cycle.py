"""How long one full telemetry cycle takes over 1,000 simulated miners of each firmware, and
how much client CPU each miner costs.

The simulators run in a separate process (``python -m wattshift.simulators.serve``), so
``time.process_time()`` here counts only the client: wattshift's fleet and pyasic. The baseline,
in the same run and over the same sockets, is one raw CGMiner ``summary`` round trip per miner
without pyasic: the ratio says what the library costs above the wire, and holds on a noisy
machine where absolute seconds do not.

    python benchmarks/telemetry_cycle.py [--count 1000] [--cycles 3] [--firmware luxos ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget

FIRST_ADDRESS = {"luxos": "127.3.0.1", "whatsminer": "127.4.0.1", "braiins": "127.5.0.1"}
CONCURRENCY = 100


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    ok: int


async def timed(run: Callable[[], Awaitable[int]]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    ok = await run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu, ok)


async def raw_summary(host: str) -> bool:
    """One CGMiner request and its whole answer, the least any client must do."""
    reader, writer = await asyncio.open_connection(host, 4028)
    try:
        writer.write(b'{"command":"summary"}')
        await writer.drain()
        return bool(await reader.read())
    finally:
        writer.close()


async def measure(firmware: str, hosts: list[str], cycles: int) -> dict[str, object]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def baseline() -> int:
        async def one(host: str) -> bool:
            async with gate:
                return await raw_summary(host)

        return sum(await asyncio.gather(*(one(h) for h in hosts)))

    hinted = MinerFleet([MinerTarget(h, firmware=firmware) for h in hosts], FleetSettings(concurrency=CONCURRENCY))
    await hinted.discover()

    async def cycle() -> int:
        readings = await hinted.read_all()
        return sum(1 for r in readings.values() if not isinstance(r, DeviceError))

    auto = MinerFleet([MinerTarget(h) for h in hosts], FleetSettings(concurrency=CONCURRENCY))

    async def identify() -> int:
        found = await auto.discover()
        return sum(1 for r in found.values() if not isinstance(r, DeviceError))

    identified = await timed(identify)
    base = [await timed(baseline) for _ in range(cycles)]
    runs = [await timed(cycle) for _ in range(cycles)]
    wall = statistics.median(t.wall_s for t in runs)
    cpu = statistics.median(t.cpu_s for t in runs)
    base_wall = statistics.median(t.wall_s for t in base)
    base_cpu = statistics.median(t.cpu_s for t in base)
    return {
        "firmware": firmware,
        "miners": len(hosts),
        "identified": identified.ok,
        "identify_s": round(identified.wall_s, 2),
        "read_ok": min(t.ok for t in runs),
        "cycle_s": round(wall, 3),
        "cpu_ms_per_miner": round(cpu / len(hosts) * 1000, 2),
        "baseline_cycle_s": round(base_wall, 3),
        "baseline_cpu_ms_per_miner": round(base_cpu / len(hosts) * 1000, 3),
        "cpu_ratio_to_baseline": round(cpu / base_cpu, 1) if base_cpu else None,
    }


def start_simulators(firmware: str, count: int) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattshift.simulators.serve", "--firmware", firmware,
         "--count", str(count), "--first-address", FIRST_ADDRESS[firmware]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit(f"the {firmware} simulators did not start (see their stderr above)")
    return proc, json.loads(line)["hosts"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--firmware", nargs="*", default=list(FIRST_ADDRESS), choices=list(FIRST_ADDRESS))
    args = parser.parse_args()
    rows = []
    for firmware in args.firmware:
        print(f"{firmware}: starting {args.count} simulators in their own process ...", file=sys.stderr, flush=True)
        proc, hosts = start_simulators(firmware, args.count)
        try:
            rows.append(asyncio.run(measure(firmware, hosts, args.cycles)))
        finally:
            proc.communicate(input="", timeout=120)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    header = ["firmware", "miners", "identified", "identify_s", "read_ok", "cycle_s", "cpu_ms_per_miner",
              "baseline_cycle_s", "baseline_cpu_ms_per_miner", "cpu_ratio_to_baseline"]
    print("  ".join(header))
    for row in rows:
        print("  ".join(str(row[h]).rjust(len(h)) for h in header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
