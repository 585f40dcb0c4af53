"""How often pyasic identifies a VNish miner right, against wattshift's ``identify`` on the same miners.

Simulated VNish miners on loopback (their web page takes a seeded 0-5 ms, bmminer's ``version``
none), each identified in turn by ``pyasic.get_miner`` and then by
:func:`wattshift.drivers.pyasic_backends.identify`, series after series, in the same run. Needs
to listen on port 80 (root or CAP_NET_BIND_SERVICE).

    python benchmarks/vnish_identification.py [--count 20] [--series 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from wattshift.drivers.pyasic_backends import identify, import_pyasic, traits_for
from wattshift.model.specs import SPECS
from wattshift.simulators.vnish import VNishMiner

FIRST = "127.6.0."


async def run(count: int, series: int) -> None:
    pyasic = import_pyasic()
    miners = [VNishMiner(f"{FIRST}{n}", SPECS["Antminer S21"], seed=n) for n in range(1, count + 1)]
    await asyncio.gather(*(m.start() for m in miners))
    try:
        for number in range(1, series + 1):
            for name, find in (("pyasic.get_miner", pyasic.get_miner), ("identify", identify)):
                started, right = time.perf_counter(), 0
                for miner in miners:
                    right += traits_for(await find(miner.host)).firmware == "vnish"
                per_miner_ms = (time.perf_counter() - started) / count * 1000
                print(f"series {number}: {name:17} right {right:2d}/{count}, {per_miner_ms:5.1f} ms per miner")
    finally:
        await asyncio.gather(*(m.stop() for m in miners))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--series", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.count, args.series))


if __name__ == "__main__":
    main()
