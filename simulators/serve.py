"""Run a simulated site in its own process: ``python -m wattshift.simulators.serve``.

Benchmarks use it to keep the simulators' CPU out of the client's measurement; an operator can
use it to try ``wattshift plan`` or ``run`` against fake miners. It prints one JSON line when
every miner listens (``{"ready": true, "hosts": [...]}``) and runs until SIGTERM, SIGINT or
end of standard input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from .site import FIRMWARE_MODULES, MinerBatch, SimulatedSite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wattshift.simulators.serve", description=__doc__)
    parser.add_argument("--firmware", choices=sorted(FIRMWARE_MODULES), required=True)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--model", default=None, help="a model of simulators.physics.SPECS")
    parser.add_argument("--first-address", default="127.2.0.1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    batch = MinerBatch(args.firmware, args.count, model=args.model)
    site = SimulatedSite([batch], first_address=args.first_address, seed=args.seed)
    asyncio.run(_serve(site))
    return 0


async def _serve(site: SimulatedSite) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.readline() else None)
    async with site:
        print(json.dumps({"ready": True, "hosts": [m.host for m in site.miners]}), flush=True)
        await stop.wait()


if __name__ == "__main__":
    sys.exit(main())
