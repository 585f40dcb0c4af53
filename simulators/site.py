"""A whole simulated site: N miners of mixed firmware on loopback addresses, on circuits.

Tests, benchmarks and the demo start one of these and point the daemon at it. It knows the
*true* draw of every miner (from the physics, not from what the daemon believes), and a
:class:`TruthMonitor` samples it while the daemon runs, so a test can say "the site was never
over its budget" about the real thing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wattshift.model.specs import SPECS

from .gpu_site import SimulatedGpuSite
from .miner import SimulatedMiner
from .physics import Clock

FIRMWARE_MODULES = {
    "luxos": ("wattshift.simulators.luxos", "LuxOSMiner"),
    "whatsminer": ("wattshift.simulators.whatsminer", "WhatsminerMiner"),
    "braiins": ("wattshift.simulators.braiins", "BraiinsMiner"),
    "antminer": ("wattshift.simulators.antminer", "AntminerMiner"),
    "vnish": ("wattshift.simulators.vnish", "VNishMiner"),
    "whatsminer_v3": ("wattshift.simulators.whatsminer_v3", "WhatsminerV3Miner"),
}
DEFAULT_MODELS = {
    "luxos": "Antminer S21",
    "whatsminer": "Whatsminer M60S",
    "braiins": "Antminer S19 XP",
    "antminer": "Antminer S21",
    "vnish": "Antminer S21",
    "whatsminer_v3": "Whatsminer M60S",
}
# The site file names the firmware family; both Whatsminer APIs are "whatsminer" there (pyasic
# picks API v2 or v3 from the firmware version).
SITE_FILE_FIRMWARE = {"whatsminer_v3": "whatsminer"}


def simulator_class(firmware: str) -> type[SimulatedMiner]:
    import importlib

    try:
        module_name, class_name = FIRMWARE_MODULES[firmware]
    except KeyError:
        raise ValueError(f"no simulator for firmware {firmware!r} (have: {sorted(FIRMWARE_MODULES)})") from None
    cls: type[SimulatedMiner] = getattr(importlib.import_module(module_name), class_name)
    return cls


@dataclass(frozen=True, slots=True)
class MinerBatch:
    """``count`` miners of one firmware and model on one circuit. ``physics`` overrides the
    site's physics options for this batch (a slow ramp, a boot delay); ``settings`` sets
    attributes of each simulator (``reports_constraints=False``: older Braiins OS+)."""

    firmware: str
    count: int
    circuit: str = "site"
    model: str | None = None
    physics: Mapping[str, float] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec_model(self) -> str:
        return self.model or DEFAULT_MODELS[self.firmware]


def loopback_hosts(first: str) -> Iterator[str]:
    """Addresses from ``first`` on, skipping .0 and .255 so every one looks like a host."""
    address = ipaddress.IPv4Address(first)
    while True:
        if address not in ipaddress.IPv4Network("127.0.0.0/8"):
            raise ValueError("ran out of loopback addresses")
        if address.packed[-1] not in (0, 255):
            yield str(address)
        address += 1


@dataclass
class SimulatedSite:
    batches: list[MinerBatch]
    first_address: str = "127.1.0.1"
    clock: Clock | None = None
    seed: int = 0
    physics_options: dict[str, float] = field(default_factory=dict)
    start_asleep: bool = False  # a cold start: every miner idle until the controller wakes it
    miners: list[SimulatedMiner] = field(init=False, default_factory=list)
    circuit_of: dict[str, str] = field(init=False, default_factory=dict)
    firmware_of: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        hosts = loopback_hosts(self.first_address)
        for batch in self.batches:
            cls = simulator_class(batch.firmware)
            spec = SPECS[batch.spec_model]
            for _ in range(batch.count):
                host = next(hosts)
                seed = self.seed * 100_003 + len(self.miners)
                miner = cls(host, spec, clock=self.clock, seed=seed, **{**self.physics_options, **batch.physics})
                for name, value in batch.settings.items():
                    if not hasattr(miner, name):
                        raise ValueError(f"{host}: a {batch.firmware} simulator has no setting {name!r}")
                    setattr(miner, name, value)
                if self.start_asleep:
                    miner.physics.sleep(settled=True)
                self.miners.append(miner)
                self.circuit_of[host] = batch.circuit
                self.firmware_of[host] = batch.firmware

    async def start(self, concurrency: int = 64) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def start_one(miner: SimulatedMiner) -> None:
            async with gate:
                await miner.start()

        await asyncio.gather(*(start_one(m) for m in self.miners))

    async def stop(self) -> None:
        await asyncio.gather(*(m.stop() for m in self.miners), return_exceptions=True)

    async def __aenter__(self) -> SimulatedSite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def miner(self, host: str) -> SimulatedMiner:
        for m in self.miners:
            if m.host == host:
                return m
        raise KeyError(host)

    # -- ground truth ---------------------------------------------------------------------------

    def true_watts(self) -> float:
        return sum(m.true_watts() for m in self.miners)

    def true_watts_by_circuit(self, parents: Mapping[str, str | None]) -> dict[str, float]:
        """True draw per circuit, each circuit including its descendants (as the breaker sees)."""
        totals = dict.fromkeys(parents, 0.0)
        for m in self.miners:
            add_up(totals, parents, self.circuit_of[m.host], m.true_watts())
        return totals

    def site_file(self, **site: Any) -> dict[str, Any]:
        """A site-file mapping that points at these miners, one group per batch."""
        groups = []
        offset = 0
        for batch in self.batches:
            hosts = [m.host for m in self.miners[offset : offset + batch.count]]
            offset += batch.count
            groups.append(
                {
                    "circuit": batch.circuit,
                    "addresses": hosts,
                    "firmware": SITE_FILE_FIRMWARE.get(batch.firmware, batch.firmware),
                    "model": batch.spec_model,
                }
            )
        return {**site, "miners": groups}


def add_up(totals: dict[str, float], parents: Mapping[str, str | None], circuit: str, watts: float) -> None:
    """Count ``watts`` on ``circuit`` and every circuit above it, as the breakers see them."""
    node: str | None = circuit
    while node is not None:
        totals[node] += watts
        node = parents[node]


@dataclass(frozen=True, slots=True)
class Excursion:
    at: float
    circuit: str
    watts: float
    limit: float


class TruthMonitor:
    """Samples the site's true draw every ``interval`` seconds and keeps every excursion over
    a limit. ``limits`` is called at each sample, so a budget that changes is followed."""

    def __init__(
        self,
        site: SimulatedSite,
        parents: Mapping[str, str | None],
        limits: Callable[[], Mapping[str, float]],
        *,
        interval: float = 0.05,
        clock: Clock = time.monotonic,
        gpus: SimulatedGpuSite | None = None,
        unmetered_watts: float = 0.0,
    ) -> None:
        self.site = site
        self.gpus = gpus
        self.unmetered_watts = unmetered_watts  # cooling, losses: on the site's meter, on no device
        self.parents = dict(parents)
        self.limits = limits
        self.interval = interval
        self.clock = clock
        self.excursions: list[Excursion] = []
        self.peak_watts = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def true_watts_by_circuit(self) -> dict[str, float]:
        """What each breaker carries now: miners, GPU nodes, and at the site the unmetered load."""
        totals = self.site.true_watts_by_circuit(self.parents)
        if self.gpus is not None:
            self.gpus.advance()
        for node in self.gpus or ():
            add_up(totals, self.parents, node.spec.circuit, node.true_watts())
        totals["site"] += self.unmetered_watts
        return totals

    def sample(self) -> None:
        totals = self.true_watts_by_circuit()
        self.samples += 1
        self.peak_watts = max(self.peak_watts, totals["site"])
        for circuit, limit in self.limits().items():
            if totals.get(circuit, 0.0) > limit + 1e-6:
                self.excursions.append(Excursion(self.clock(), circuit, totals[circuit], limit))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> TruthMonitor:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample()
