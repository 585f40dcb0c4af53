"""The physical model of one simulated NVIDIA GPU, and the faults it can be told to show.

The simulated NVML library (:mod:`wattshift.simulators.nvml_lib`) answers every C entry point
from one of these, so the watts a driver reads through the real binding are the watts the site
simulator counts as the *true* draw. Like the miner model, it is evaluated lazily against a
clock: nothing ticks in the background, and a test that injects a fake clock steps it exactly.

- the job sets a load (0..1) and its PIDs; draw heads for ``idle + load * (full - idle)``,
  held under the enforced limit (the management limit, or a lower system cap);
- draw moves towards that target on a linear ramp that crosses the card's whole range in
  ``ramp_s`` (about a second, as a real power cap acts);
- the energy counter (mJ) integrates the draw exactly over the ramp;
- temperature relaxes towards ``ambient + k * watts`` with a time constant.

Thread-safe: NVML calls arrive on the driver's worker threads while the site simulator sets
loads from its event loop, so every public method takes the GPU's lock.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One row of the model table: the name NVML reports and the range the card accepts."""

    key: str
    name: str  # as nvmlDeviceGetName returns it on the real card
    min_watts: float
    max_watts: float
    default_watts: float
    idle_watts: float
    full_load_watts: float  # steady draw at load 1.0 with no cap below it
    degrees_per_watt: float  # temperature rise over ambient per watt, at equilibrium
    memory_bytes: int


# Power ranges as the cards' constraints report them (SXM boards at their default TDP);
# idle draws are what an idle card with its memory clocked reports, rounded.
GPU_MODELS: dict[str, GpuSpec] = {
    spec.key: spec
    for spec in (
        GpuSpec("H100-SXM", "NVIDIA H100 80GB HBM3", 200, 700, 700, 70, 690, 0.060, 80 << 30),
        GpuSpec("H200-SXM", "NVIDIA H200", 200, 700, 700, 75, 690, 0.058, 141 << 30),
        GpuSpec("A100-SXM", "NVIDIA A100-SXM4-80GB", 100, 400, 400, 55, 390, 0.090, 80 << 30),
        GpuSpec("L40S", "NVIDIA L40S", 100, 350, 350, 35, 345, 0.130, 48 << 30),
        GpuSpec("RTX-4090", "NVIDIA GeForce RTX 4090", 150, 450, 450, 20, 440, 0.110, 24 << 30),
    )
}


def gpu_uuid(seed: int | str, number: int) -> str:
    """A UUID shaped like the real ones (``GPU-8-4-4-4-12`` hex), the same for the same inputs."""
    bits = random.Random(f"wattshift-gpu:{seed}:{number}").getrandbits(128)
    h = f"{bits:032x}"
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class GpuFaults:
    """What a GPU is told to get wrong. Function names are the C entry points
    (``nvmlDeviceGetPowerUsage``, ``nvmlDeviceSetPowerManagementLimit``, ...)."""

    lost: bool = False  # every device call: NVML_ERROR_GPU_IS_LOST
    reset_required: bool = False  # every device call: NVML_ERROR_RESET_REQUIRED
    no_permission: bool = False  # setting the limit: NVML_ERROR_NO_PERMISSION (not root)
    ignore_set: bool = False  # setting the limit says OK and changes nothing
    not_supported: set[str] = field(default_factory=set)  # NVML_ERROR_NOT_SUPPORTED
    errors: dict[str, int] = field(default_factory=dict)  # function -> NVML error code
    # Errors that strike once a set has landed (a card that takes the cap, then fails the
    # read-back): moved into ``errors`` by the first successful set.
    errors_after_set: dict[str, int] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)  # function ("*": all) -> seconds


class SimulatedGpu:
    """True state of one GPU. Create it, hand it to ``simulated_nvml``, and drive its load."""

    def __init__(
        self,
        model: str | GpuSpec = "H100-SXM",
        *,
        uuid: str | None = None,
        clock: Clock | None = None,
        ambient_c: float = 25.0,
        ramp_s: float = 1.0,
        temp_tau_s: float = 30.0,
        energy_since_load_mj: int = 0,
        pci_bus: int | None = None,
    ) -> None:
        if isinstance(model, str):
            try:
                model = GPU_MODELS[model]
            except KeyError:
                known = ", ".join(GPU_MODELS)
                raise ValueError(f"model: unknown GPU model {model!r} (known: {known})") from None
        self.spec = model
        self.uuid = uuid  # None: simulated_nvml assigns gpu_uuid(seed, position)
        self.pci_bus = pci_bus
        self._clock = clock or time.monotonic
        self.ambient_c = ambient_c
        self.ramp_s = ramp_s
        self.temp_tau_s = temp_tau_s
        self.faults = GpuFaults()
        self._lock = threading.RLock()
        self._t = self._clock()
        self._load = 0.0
        self._pids: tuple[int, ...] = ()
        self._limit_w = model.default_watts
        self._system_cap_w: float | None = None
        self._draw_w = model.idle_watts
        self._temp_c = ambient_c + model.degrees_per_watt * model.idle_watts
        self._energy_mj = float(energy_since_load_mj)

    # --- the job's side -------------------------------------------------------------------

    def set_job(self, load: float, pids: Iterable[int] = ()) -> None:
        """What runs on the card: ``load`` 0..1 (0 with no PIDs is an idle card)."""
        if not 0.0 <= load <= 1.0 or math.isnan(load):
            raise ValueError(f"load: {load!r} is outside 0..1")
        with self._lock:
            self._advance()
            self._load = float(load)
            self._pids = tuple(int(p) for p in pids)

    def set_system_cap(self, watts: float | None) -> None:
        """A cap below the management limit (thermal or system brake): the enforced limit."""
        with self._lock:
            self._advance()
            self._system_cap_w = watts

    # --- what NVML reads -------------------------------------------------------------------

    @property
    def load(self) -> float:
        return self._load

    @property
    def pids(self) -> tuple[int, ...]:
        return self._pids

    @property
    def limit_watts(self) -> float:
        return self._limit_w

    @property
    def enforced_watts(self) -> float:
        cap = self._system_cap_w
        return self._limit_w if cap is None else min(self._limit_w, cap)

    def target_watts(self) -> float:
        """Where the draw is heading now: the job's demand under the enforced limit."""
        spec = self.spec
        demand = spec.idle_watts + self._load * (spec.full_load_watts - spec.idle_watts)
        return max(spec.idle_watts, min(demand, self.enforced_watts))

    def draw_watts(self) -> float:
        with self._lock:
            self._advance()
            return self._draw_w

    def energy_mj(self) -> int:
        with self._lock:
            self._advance()
            return int(self._energy_mj)

    def temperature_c(self) -> float:
        with self._lock:
            self._advance()
            return self._temp_c

    def utilisation_pct(self) -> tuple[int, int]:
        """(gpu, memory) busy percentages, as nvmlDeviceGetUtilizationRates gives them."""
        busy = self._load if (self._load > 0 or self._pids) else 0.0
        return round(100 * busy), round(55 * busy)

    def set_limit_watts(self, watts: float) -> None:
        """What nvmlDeviceSetPowerManagementLimit does once it accepted the value."""
        with self._lock:
            self._advance()
            self._limit_w = watts

    # --- the model ---------------------------------------------------------------------------

    def _advance(self) -> None:
        """Carry the state from the last evaluation to now, exactly for a constant target."""
        now = self._clock()
        dt = now - self._t
        if dt <= 0:
            return
        self._t = now
        spec = self.spec
        target = self.target_watts()
        rate = (spec.max_watts - spec.idle_watts) / self.ramp_s
        start = self._draw_w
        gap = target - start
        t_ramp = abs(gap) / rate if rate > 0 else 0.0
        if t_ramp >= dt:
            end = start + math.copysign(rate * dt, gap)
            joules = (start + end) / 2 * dt
        else:
            end = target
            joules = (start + end) / 2 * t_ramp + target * (dt - t_ramp)
        self._draw_w = end
        self._energy_mj += joules * 1000.0
        # Temperature heads for the equilibrium of the mean draw over the step.
        mean_w = joules / dt
        equilibrium = self.ambient_c + spec.degrees_per_watt * mean_w
        self._temp_c = equilibrium + (self._temp_c - equilibrium) * math.exp(-dt / self.temp_tau_s)
