"""Every pluggable driver kind by the name the site file uses: GPU drivers, job runners, price sources.

Each kind's interface lives in its own module (``gpu``, ``jobs``, ``prices``) and names no
implementation; this is the one module that does, so an implementation may import its interface
without a cycle. Each is imported only when its kind is asked for: pyasic and the NVML binding
are heavy, and their import-time side effects are not wanted by ``wattshift validate``.

Adding a GPU driver, a job runner or a price source: its module, and one line here.
"""

from __future__ import annotations

from wattshift.drivers.gpu import GpuDriverFactory
from wattshift.drivers.jobs import JobRunnerFactory
from wattshift.drivers.prices import FixedPrice, PriceFactory, TracePrice
from wattshift.model.registry import Registry


def gpu_drivers() -> Registry[GpuDriverFactory]:
    """GPU driver kinds by the name the site file uses (``driver: nvml``, ``driver: agent``)."""
    registry: Registry[GpuDriverFactory] = Registry("GPU driver")
    from .agent_gpu import AgentGpus
    from .nvml_gpu import NvmlGpus

    registry.register("nvml")(NvmlGpus)
    registry.register("agent")(AgentGpus)
    return registry


def job_runners() -> Registry[JobRunnerFactory]:
    """Runner kinds by the name the site file uses (``runner: slurm``)."""
    from .command_runner import CommandRunner
    from .slurm_runner import SlurmRunner

    registry: Registry[JobRunnerFactory] = Registry("job runner")
    registry.register("slurm")(SlurmRunner)
    registry.register("command")(CommandRunner)
    return registry


def price_sources() -> Registry[PriceFactory]:
    from .hashprice_feeds import LuxorHashprice, MempoolHashprice
    from .power_prices import RealTimePrice, TimeOfUsePrice

    registry: Registry[PriceFactory] = Registry("price source")
    registry.register("fixed")(FixedPrice)
    registry.register("trace")(TracePrice)
    registry.register("mempool")(MempoolHashprice)
    registry.register("luxor")(LuxorHashprice)
    registry.register("time_of_use")(TimeOfUsePrice)
    registry.register("http")(RealTimePrice)
    return registry
