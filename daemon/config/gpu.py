"""The GPU part of the site file: nodes, the scheduler that runs their jobs, and what jobs are worth.

A node is one server: N cards read and capped through one GPU driver (``nvml``: NVML on this
host, or the simulated library in the demo; ``agent``: the ``wattshift agent`` on the GPU host
named by ``host``, over the site's MQTT broker), plus a host whose draw NVML cannot see (CPUs, fans, NICs), given
in kW by the operator. Jobs come from one runner (Slurm, operator commands, the simulator); job
classes, matched on the job name, say how far each job may be moved and what it earns.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from wattshift.model.fields import SITE_CIRCUIT, Name, Strict
from wattshift.model.jobs import FlexTier, SwitchingCost

# A server holds at most 64 cards (gpu_count): an index past that is a typo, and a range like
# 0-99999999 must be refused before it is expanded into a list.
MAX_GPU_INDEX = 63


class GpuHost(Strict):
    """The draw of a GPU server that is not its cards' (CPUs, fans, NICs: NVML cannot see it),
    and an idle card's. The site file's nodes and the back-test's node counts share it."""

    host_idle_kw: float = Field(default=0.8, gt=0, le=50)
    host_max_kw: float = Field(default=1.5, gt=0, le=50)
    gpu_idle_watts: float = Field(default=70.0, ge=0, le=2000)

    @model_validator(mode="after")
    def _host_range(self) -> GpuHost:
        if self.host_max_kw < self.host_idle_kw:
            raise ValueError(f"host_max_kw ({self.host_max_kw}) is below host_idle_kw ({self.host_idle_kw})")
        return self

    @property
    def host_idle_watts(self) -> float:
        return self.host_idle_kw * 1000.0

    @property
    def host_max_watts(self) -> float:
        return self.host_max_kw * 1000.0


class GpuNodeConfig(GpuHost):
    name: Name
    circuit: Name = SITE_CIRCUIT
    driver: Literal["nvml", "agent"] = "nvml"
    host: Name | None = None  # driver agent: the agent's host name (its topics); default ``name``
    # "all", an index range "0-7", or a list of indices or UUIDs on that driver's host.
    gpus: str | Annotated[list[str], Field(max_length=MAX_GPU_INDEX + 1)] = "all"
    gpu_count: int = Field(default=8, ge=1, le=64)  # what the node must show: fewer is a lost card
    scheduler_node: str | None = None  # the node's name in the scheduler, if not ``name``

    @property
    def scheduler_name(self) -> str:
        return self.scheduler_node or self.name

    def selection(self) -> str | list[int | str]:
        """The driver's ``gpus`` argument: "all", or indices (int) and UUIDs (str)."""
        if isinstance(self.gpus, list):
            return [int(g) if g.isdigit() else g for g in self.gpus]
        if self.gpus == "all":
            return "all"
        first, _, last = self.gpus.partition("-")
        return list(range(int(first), int(last or first) + 1))

    @model_validator(mode="after")
    def _host_for_agents(self) -> GpuNodeConfig:
        if self.host is not None and self.driver != "agent":
            raise ValueError(f"host {self.host!r} is for driver: agent (this node's driver is {self.driver})")
        return self

    @property
    def agent_host(self) -> str:
        return self.host or self.name

    @field_validator("gpus")
    @classmethod
    def _range(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and value != "all":
            first, _, last = value.partition("-")
            if not first.isdigit() or (last and not last.isdigit()) or (last and int(last) < int(first)):
                raise ValueError(f"expected 'all', an index range like '0-7', or a list (got {value!r})")
            if int(last or first) > MAX_GPU_INDEX:  # counted before anything is expanded
                raise ValueError(f"GPU indices go up to {MAX_GPU_INDEX} (got {value!r})")
        return value


class JobClass(Strict):
    """How to treat the jobs whose name matches ``match`` (shell-style pattern)."""

    match: str = "*"
    tier: FlexTier = FlexTier.SUSPENDABLE
    # What a GPU-hour of this work earns: a contract rate, or the market rate of a GPU model
    # named in prices.gpu_rates_usd_per_gpu_hour.
    rate_usd_per_gpu_hour: float | None = Field(default=None, ge=0, le=1000)
    market: str | None = None
    checkpoint_seconds: float = Field(default=0.0, ge=0)
    restart_seconds: float = Field(default=0.0, ge=0)
    penalty_usd: float = Field(default=0.0, ge=0)
    min_run_seconds: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_rate(self) -> JobClass:
        if (self.rate_usd_per_gpu_hour is None) == (self.market is None):
            raise ValueError("give exactly one of rate_usd_per_gpu_hour (a contract) or market (a GPU model)")
        return self

    @property
    def switching(self) -> SwitchingCost:
        return SwitchingCost(self.checkpoint_seconds, self.restart_seconds, self.penalty_usd)


class SlurmRunnerConfig(Strict):
    kind: Literal["slurm"]
    slurm_conf: str | None = None
    partition: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class CommandRunnerConfig(Strict):
    kind: Literal["command"]
    commands: dict[str, str]
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


RunnerConfig = Annotated[SlurmRunnerConfig | CommandRunnerConfig, Field(discriminator="kind")]


class JobsConfig(Strict):
    runner: RunnerConfig | None = None  # None: the demo's simulated runner, or no AI jobs
    # A job no class matches is treated as firm: we never move work we know nothing about.
    classes: list[JobClass] = Field(default_factory=list)

    def class_for(self, job_name: str) -> JobClass | None:
        return next((c for c in self.classes if fnmatch.fnmatchcase(job_name, c.match)), None)

    def runner_options(self) -> dict[str, Any]:
        return self.runner.model_dump(exclude={"kind"}) if self.runner else {}
