"""Simulated GPU servers: N nodes of 8 cards under one simulated NVML library.

Each node is its cards (:class:`~wattshift.simulators.gpu_physics.SimulatedGpu`) plus a host
whose draw rises with the cards' load, the way a real server's CPUs, fans and NICs do. The job
runner (simulated or not) tells the site what runs where through :meth:`SimulatedGpuSite.apply`;
the cards' draw then follows the job and the caps the daemon sets through NVML. The site's
*true* draw per circuit is what tests and the demo judge the daemon by.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .gpu_physics import SimulatedGpu
from .jobs import SimulatedJobRunner
from .nvml_lib import SimulatedNvmlLib, simulated_nvml


@dataclass(frozen=True)
class GpuNodeSpec:
    name: str
    circuit: str = "site"
    model: str = "H100-SXM"
    gpu_count: int = 8
    host_idle_watts: float = 800.0
    host_max_watts: float = 1500.0


class SimulatedGpuNode:
    def __init__(self, spec: GpuNodeSpec, gpus: list[SimulatedGpu], first_index: int) -> None:
        self.spec = spec
        self.gpus = gpus
        self.first_index = first_index
        self.load = 0.0

    def run(self, load: float, pids: tuple[int, ...]) -> None:
        self.load = load
        for gpu in self.gpus:
            gpu.set_job(load, pids)

    def true_watts(self) -> float:
        host = self.spec.host_idle_watts + (self.spec.host_max_watts - self.spec.host_idle_watts) * self.load
        return host + sum(gpu.draw_watts() for gpu in self.gpus)


class SimulatedGpuSite:
    """Use as a context manager: the simulated library is installed for its duration."""

    def __init__(self, specs: list[GpuNodeSpec], *, clock: Callable[[], float] | None = None, seed: int = 0) -> None:
        self.nodes: dict[str, SimulatedGpuNode] = {}
        cards: list[SimulatedGpu] = []
        for spec in specs:
            gpus = [SimulatedGpu(spec.model, clock=clock) for _ in range(spec.gpu_count)]
            self.nodes[spec.name] = SimulatedGpuNode(spec, gpus, len(cards))
            cards += gpus
        self._cards = cards
        self._seed = seed
        self._stack = contextlib.ExitStack()
        self.library: SimulatedNvmlLib | None = None
        self._runner: SimulatedJobRunner | None = None

    def __enter__(self) -> SimulatedGpuSite:
        self.library = self._stack.enter_context(simulated_nvml(self._cards, seed=self._seed))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.library = None

    def apply(self, node: str, load: float, pids: tuple[int, ...] = ()) -> None:
        """What runs on ``node`` now: ``load`` 0..1; PIDs held with load 0 is a suspended job."""
        self.nodes[node].run(load, pids)

    def follow(self, runner: SimulatedJobRunner) -> None:
        """Drive the cards from the simulated scheduler: what draws, on which node, with which
        processes (a suspended job keeps its processes and memory, and draws idle)."""

        def push(_job: object = None) -> None:
            for name in self.nodes:
                loads = runner.load_of(name)
                pids = tuple(sorted({p for held in runner.pids_of(name).values() for p in held}))
                self.apply(name, max(loads.values(), default=0.0), pids)

        runner.on_change = push
        self._runner = runner
        push()

    def advance(self) -> None:
        """Play the scheduler's events due by now (it is lazy: nothing runs in the background)."""
        if self._runner is not None:
            self._runner.advance()

    def true_watts(self, circuit: str | None = None) -> float:
        return sum(n.true_watts() for n in self.nodes.values() if circuit is None or n.spec.circuit == circuit)

    def node_config(self, node: SimulatedGpuNode) -> dict[str, Any]:
        """The node's entry for a site file."""
        spec = node.spec
        return {
            "name": spec.name,
            "circuit": spec.circuit,
            "driver": "nvml",
            "gpus": f"{node.first_index}-{node.first_index + spec.gpu_count - 1}",
            "gpu_count": spec.gpu_count,
            "host_idle_kw": spec.host_idle_watts / 1000,
            "host_max_kw": spec.host_max_watts / 1000,
            "gpu_idle_watts": node.gpus[0].spec.idle_watts,
        }

    def site_file_nodes(self) -> list[dict[str, Any]]:
        return [self.node_config(n) for n in self.nodes.values()]

    def __iter__(self) -> Iterator[SimulatedGpuNode]:
        return iter(self.nodes.values())
