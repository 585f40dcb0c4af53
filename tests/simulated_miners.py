"""Simulated miners for the driver tests, one row per firmware.

Adding a firmware to every parametrized driver test is one line in :data:`SIM_KINDS`. Each
firmware gets its own /24 of the driver tests' loopback range (127.0.5.x-127.0.9.x).
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from dataclasses import dataclass

from wattshift.drivers.pyasic_miner import Deadlines
from wattshift.model.miner import PowerControl
from wattshift.model.specs import SPECS, MinerSpec
from wattshift.simulators.braiins import BraiinsMiner
from wattshift.simulators.luxos import LuxOSMiner
from wattshift.simulators.miner import SimulatedMiner
from wattshift.simulators.whatsminer import WhatsminerMiner

# Power moves at once, so a read right after a command sees where it settled; a reboot is short.
FAST_PHYSICS = {"ramp_watts_per_s": 1e6, "reboot_s": 0.3}
# Short enough to keep a hanging or ignoring miner's test well under a second.
TEST_DEADLINES = Deadlines(call_s=0.3, confirm_s=0.3, poll_s=0.02)


@dataclass(frozen=True, slots=True)
class SimKind:
    firmware: str
    simulator: type[SimulatedMiner]
    model: str
    subnet: str  # first three octets
    control: PowerControl  # what the driver should find

    @property
    def spec(self) -> MinerSpec:
        return SPECS[self.model]

    def host(self, n: int) -> str:
        return f"{self.subnet}.{n}"

    def build(self, n: int = 1) -> SimulatedMiner:
        return self.simulator(self.host(n), self.spec, seed=n, **FAST_PHYSICS)


SIM_KINDS = (
    SimKind("luxos", LuxOSMiner, "Antminer S21", "127.0.5", PowerControl.PROFILES),
    SimKind("whatsminer", WhatsminerMiner, "Whatsminer M60S", "127.0.6", PowerControl.WATTS),
    SimKind("braiins", BraiinsMiner, "Antminer S19 XP", "127.0.7", PowerControl.WATTS),
)
LUXOS = SIM_KINDS[0]


async def collect_pyasic_leftovers() -> None:
    """Close the sockets pyasic abandoned, while this test's event loop still runs.

    A deadline that cancels a pyasic call leaves its socket unclosed (and, for the RPC API, a
    read task that runs until the peer closes). Once the simulators have stopped, those reads
    end; collecting now lets the streams' finalisers close the sockets on a live loop instead
    of warning from a later test, after this loop is gone.
    """
    await asyncio.sleep(0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
