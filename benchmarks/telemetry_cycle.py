"""One full telemetry cycle over a site of mixed firmware (10,000 simulated miners by default),
and the client CPU each miner costs, per firmware, beside its peer measured in the same run.

The peer is plain pyasic: ``pyasic.get_miner(ip)`` once, then ``miner.get_data()`` per poll,
under a semaphore of 100. wattshift is its fleet (``MinerFleet.read_all``): the firmware's
CGMiner API in one multicommand where that is cheaper (drivers/cgminer_telemetry.py), pyasic's
``get_data`` elsewhere. The floor is one raw CGMiner ``summary`` round trip per miner, the least
any client must do. Each firmware's simulators run in a process of their own
(``python -m wattshift.simulators.serve``), so ``time.process_time()`` here counts only the
client; the simulators' CPU still shares the machine, so the wall-clock cycle is an upper bound.

Per firmware, each path polls only that firmware's miners (its CPU per miner); then each path
polls the whole site at once (the cycle). The peer costs up to a hundred times more CPU, so it
identifies and polls ``--peer-sample`` miners of each firmware (all of them with a sample as large
as the site: ``--peer-sample 10000``); its SITE row is then its cycle over that sample, mixed as
the site is. Ratios to the peer are per miner, and hold on a noisy machine where seconds do not.

With ``--workers 1 2``, the site is then also polled as the daemon polls it with
``drivers.telemetry_workers`` set to each of those: the same fleet with its reads in that many
worker processes, each owning every n-th miner (drivers/telemetry_shards.py). The cycle is one
``read_all`` of the daemon's fleet, from the request until every worker's answers are in; the
CPU is the daemon's process and its workers' (from /proc).

    python benchmarks/telemetry_cycle.py [--count 10000] [--peer-sample 250] [--firmware braiins ...]
                                         [--no-peer] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_backends import import_pyasic
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget

# Each firmware's simulators on their own loopback /16 (one process each).
FIRST_ADDRESS = {
    "braiins": "127.160.0.1",
    "luxos": "127.161.0.1",
    "whatsminer": "127.162.0.1",
    "antminer": "127.163.0.1",
    "vnish": "127.164.0.1",
}
CONCURRENCY = 100
CALL_S = 30.0  # generous: the benchmark measures cost, a miner cut short would be one not measured


@dataclass
class Timing:
    wall_s: float
    cpu_s: float
    ok: int
    miners: int

    @property
    def cpu_ms_per_miner(self) -> float:
        return self.cpu_s / max(1, self.miners) * 1000.0


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def timed(miners: int, run: Callable[[], Awaitable[int]]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    ok = await run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu, ok, miners)


# -- the three clients --------------------------------------------------------------------------


async def raw_summary(host: str) -> bool:
    """One CGMiner request and its whole answer, the least any client must do."""
    reader, writer = await asyncio.open_connection(host, 4028)
    try:
        writer.write(b'{"command":"summary"}')
        await writer.drain()
        return bool(await reader.read())
    finally:
        writer.close()


class Floor:
    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(CONCURRENCY)

    async def poll(self, hosts: Sequence[str]) -> int:
        async def one(host: str) -> bool:
            async with self.gate:
                try:
                    return await asyncio.wait_for(raw_summary(host), CALL_S)
                except (OSError, TimeoutError):
                    return False

        return sum(await asyncio.gather(*(one(h) for h in hosts)))


class PlainPyasic:
    """The peer: what a script on pyasic alone does."""

    def __init__(self) -> None:
        self.gate = asyncio.Semaphore(CONCURRENCY)
        self.miners: dict[str, Any] = {}

    async def identify(self, hosts: Sequence[str]) -> int:
        pyasic = import_pyasic()

        async def one(host: str) -> None:
            async with self.gate:
                miner = await pyasic.get_miner(host)
            if miner is not None:
                self.miners[host] = miner

        await asyncio.gather(*(one(h) for h in hosts))
        return sum(1 for h in hosts if h in self.miners)

    async def poll(self, hosts: Sequence[str]) -> int:
        async def one(host: str) -> bool:
            miner = self.miners.get(host)
            if miner is None:
                return False
            async with self.gate:
                try:
                    data = await asyncio.wait_for(miner.get_data(), CALL_S)
                except Exception:  # the peer as a script would run it: a failure is a miss
                    return False
            return data.wattage is not None or data.hashrate is not None

        return sum(await asyncio.gather(*(one(h) for h in hosts)))


class Wattshift:
    def __init__(self, hosts_by_firmware: dict[str, list[str]]) -> None:
        targets = [MinerTarget(h, firmware=fw) for fw, hosts in hosts_by_firmware.items() for h in hosts]
        self.fleet = MinerFleet(targets, FleetSettings(concurrency=CONCURRENCY, identify_s=CALL_S))

    async def identify(self, hosts: Sequence[str]) -> int:
        found = await self.fleet.discover()
        return sum(1 for h in hosts if not isinstance(found.get(h), DeviceError))

    async def poll(self, hosts: Sequence[str]) -> int:
        readings = await self.fleet.read(hosts)
        return sum(1 for r in readings.values() if not isinstance(r, DeviceError))

    def lean_share(self, hosts: Iterable[str]) -> str:
        drivers = [self.fleet.driver(h) for h in hosts]
        lean = sum(1 for d in drivers if d is not None and d.polls_lean)
        return f"{lean}/{len(drivers)}"


# -- shards: the daemon's telemetry workers ------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User and system CPU of a process so far, from /proc (utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sharded_cycle(
    hosts_by_firmware: dict[str, list[str]], workers: int, simulators: Sequence[int]
) -> dict[str, float]:
    """The site polled as the daemon polls it with ``drivers.telemetry_workers: workers``: the
    same fleet, its reads in that many worker processes (drivers/telemetry_shards.py). The
    simulators' CPU in the same cycle says how much of the two cores the miners' side took."""
    targets = [MinerTarget(h, firmware=fw) for fw, hosts in hosts_by_firmware.items() for h in hosts]
    settings = FleetSettings(concurrency=CONCURRENCY, identify_s=CALL_S, telemetry_workers=workers)
    fleet = MinerFleet(targets, settings)
    assert fleet.telemetry is not None
    try:
        start = time.perf_counter()
        found = await fleet.discover()
        identify_s = time.perf_counter() - start
        pids = [pid for pid in fleet.telemetry.worker_pids if pid is not None]
        cycles = []
        for _ in range(2):  # the first settles each driver's path; the second is timed
            cpu = [process_cpu_s(pid) for pid in pids]
            miners_side = sum(process_cpu_s(pid) for pid in simulators)
            ours, start = time.process_time(), time.perf_counter()
            readings = await fleet.read_all()
            wall = time.perf_counter() - start
            spent = [process_cpu_s(pid) - before for pid, before in zip(pids, cpu, strict=True)]
            miners_side = sum(process_cpu_s(pid) for pid in simulators) - miners_side
            cycles.append((wall, time.process_time() - ours, spent, miners_side, readings))
        wall, daemon_cpu, spent, miners_side, readings = cycles[-1]
        return {"workers": workers, "built": sum(1 for r in found.values() if not isinstance(r, DeviceError)),
                "identify_s": identify_s, "ok": sum(1 for r in readings.values() if not isinstance(r, DeviceError)),
                "cycle_s": wall, "cpu_ms_per_miner": (daemon_cpu + sum(spent)) / len(targets) * 1000.0,
                "daemon_cpu_s": daemon_cpu, "busiest_worker_cpu_s": max(spent), "workers_cpu_s": sum(spent),
                "simulators_cpu_s": miners_side}
    finally:
        await fleet.close()


# -- the run ------------------------------------------------------------------------------------


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


def split(total: int, firmwares: Sequence[str]) -> dict[str, int]:
    share, extra = divmod(total, len(firmwares))
    return {fw: share + (1 if i < extra else 0) for i, fw in enumerate(firmwares)}


async def measure(hosts_by_firmware: dict[str, list[str]], peer: bool, peer_sample: int) -> dict[str, Any]:
    everyone = [h for hosts in hosts_by_firmware.values() for h in hosts]
    floor, ours = Floor(), Wattshift(hosts_by_firmware)
    plain = PlainPyasic() if peer else None
    result: dict[str, Any] = {"per_firmware": {}}

    progress(f"wattshift: building {len(everyone)} drivers (firmware named in the site file) ...")
    result["wattshift_identify"] = await timed(len(everyone), lambda: ours.identify(everyone))
    sampled = [h for hosts in hosts_by_firmware.values() for h in hosts[:peer_sample]]
    if plain is not None:
        progress(f"pyasic: get_miner on {len(sampled)} addresses ...")
        result["pyasic_identify"] = await timed(len(sampled), lambda: plain.identify(sampled))

    for firmware, hosts in hosts_by_firmware.items():
        row: dict[str, Any] = {"miners": len(hosts), "lean": ours.lean_share(hosts)}
        progress(f"{firmware}: polling its {len(hosts)} miners alone, each path in turn ...")
        row["floor"] = await timed(len(hosts), lambda hosts=hosts: floor.poll(hosts))
        await ours.poll(hosts)  # a first poll settles each driver's path (lean, or pyasic's)
        row["wattshift"] = await timed(len(hosts), lambda hosts=hosts: ours.poll(hosts))
        if plain is not None:
            sample = hosts[:peer_sample]
            row["pyasic"] = await timed(len(sample), lambda sample=sample: plain.poll(sample))
        result["per_firmware"][firmware] = row

    progress(f"the whole site: {len(everyone)} miners in one cycle, each path in turn ...")
    result["site_floor"] = await timed(len(everyone), lambda: floor.poll(everyone))
    result["site_wattshift"] = await timed(len(everyone), lambda: ours.poll(everyone))
    if plain is not None:
        progress(f"pyasic: {len(sampled)} miners of every firmware in one cycle ...")
        result["site_pyasic"] = await timed(len(sampled), lambda: plain.poll(sampled))
    await ours.fleet.close()
    return result


def report(result: dict[str, Any]) -> None:
    header = ["firmware", "miners", "lean", "ok", "cycle_s", "cpu_ms/miner",
              "pyasic_ok/of", "pyasic_s", "pyasic_cpu_ms/miner", "pyasic_cpu/ours", "floor_cpu_ms/miner"]
    rows = []
    for firmware, row in result["per_firmware"].items():
        columns = _columns(row["wattshift"], row.get("pyasic"), row["floor"])
        rows.append([firmware, row["miners"], row["lean"], *columns])
    site = ["SITE", sum(r["miners"] for r in result["per_firmware"].values()), ""]
    rows.append(site + _columns(result["site_wattshift"], result.get("site_pyasic"), result["site_floor"]))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))
    ident = result["wattshift_identify"]
    print(f"start-up: wattshift built {ident.ok}/{ident.miners} drivers in {ident.wall_s:.1f} s", end="")
    if "pyasic_identify" in result:
        peer = result["pyasic_identify"]
        print(f"; pyasic.get_miner identified {peer.ok}/{peer.miners} in {peer.wall_s:.1f} s", end="")
    print()


def _columns(ours: Timing, peer: Timing | None, floor: Timing) -> list[object]:
    columns: list[object] = [ours.ok, f"{ours.wall_s:.2f}", f"{ours.cpu_ms_per_miner:.3f}"]
    if peer is None:
        columns += ["-", "-", "-", "-"]
    else:
        # Per miner: the peer may have polled a sample of the miners.
        ratio = peer.cpu_ms_per_miner / ours.cpu_ms_per_miner if ours.cpu_s else float("inf")
        columns += [f"{peer.ok}/{peer.miners}", f"{peer.wall_s:.2f}", f"{peer.cpu_ms_per_miner:.3f}", f"{ratio:.1f}x"]
    return [*columns, f"{floor.cpu_ms_per_miner:.3f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="miners in all, split evenly over the firmwares")
    parser.add_argument("--firmware", nargs="*", default=list(FIRST_ADDRESS), choices=list(FIRST_ADDRESS))
    parser.add_argument("--peer-sample", type=int, default=250, help="miners per firmware the peer polls alone")
    parser.add_argument("--no-peer", action="store_true", help="skip plain pyasic (faster; no ratios)")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also poll the site over N worker processes")
    args = parser.parse_args()
    counts = split(args.count, args.firmware)
    procs: list[subprocess.Popen[str]] = []
    hosts_by_firmware: dict[str, list[str]] = {}
    try:
        for firmware, count in counts.items():
            progress(f"{firmware}: starting {count} simulators in their own process ...")
            proc, hosts = start_simulators(firmware, count)
            procs.append(proc)
            hosts_by_firmware[firmware] = hosts
        result = asyncio.run(measure(hosts_by_firmware, peer=not args.no_peer, peer_sample=args.peer_sample))
        shards = []
        for workers in args.workers:
            progress(f"the whole site over {workers} worker process(es), each with its share ...")
            shards.append(asyncio.run(sharded_cycle(hosts_by_firmware, workers, [p.pid for p in procs])))
    finally:
        for proc in procs:
            proc.communicate(input="", timeout=120)
    print(f"telemetry cycle: {args.count} simulated miners ({', '.join(f'{fw} {n}' for fw, n in counts.items())}), "
          f"concurrency {CONCURRENCY}; cpu = this process only (simulators run apart); the peer, plain pyasic "
          f"(get_miner + get_data()), polls up to {args.peer_sample} of each firmware")
    report(result)
    for shard in shards:
        print(f"drivers.telemetry_workers {shard['workers']}: cycle {shard['cycle_s']:.2f} s, "
              f"{shard['ok']}/{args.count} read, {shard['cpu_ms_per_miner']:.3f} ms of client CPU per miner in all "
              f"(the daemon's process {shard['daemon_cpu_s']:.2f} s, its workers {shard['workers_cpu_s']:.2f} s, "
              f"the busiest {shard['busiest_worker_cpu_s']:.2f} s; the simulators {shard['simulators_cpu_s']:.2f} s "
              f"in the same cycle); start-up: {shard['built']} identified in {shard['identify_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
