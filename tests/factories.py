"""Builders for snapshots in pure tests: a miner is one line, a site a few."""

from __future__ import annotations

from datetime import UTC, datetime

from wattshift.daemon.model import EfficiencyCurve, GpuJob, GpuNodeState, MinerState, Prices, SiteSnapshot
from wattshift.drivers.base import Failure, MinerCapability, MinerReading, PowerControl
from wattshift.drivers.gpu import GpuLimits, GpuReading
from wattshift.drivers.jobs import FlexTier, JobState, SwitchingCost

S21 = EfficiencyCurve(3500, 200)
S19XP = EfficiencyCurve(3010, 140)
WATTS = MinerCapability(PowerControl.WATTS, 1800, 4000)


def miner(
    device_id: str,
    *,
    circuit: str = "site",
    watts: float | None = 3500.0,
    limit: float | None = 3500.0,
    mining: bool | None = True,
    curve: EfficiencyCurve = S21,
    capability: MinerCapability = WATTS,
    failure: Failure | None = None,
    answered: bool = True,
    state_since: float | None = None,
) -> MinerState:
    reading = (
        MinerReading(device_id, "Antminer S21", "sim", watts, limit, curve.ths_at(watts or 0), mining)
        if answered
        else None
    )
    return MinerState(
        device_id=device_id,
        circuit=circuit,
        model="Antminer S21",
        capability=capability,
        curve=curve,
        reading=reading,
        failure=failure if answered else (failure or Failure.NO_ANSWER),
        max_watts=capability.max_watts,
        state_since=state_since,
    )


H100 = GpuLimits(200.0, 700.0, 700.0)


def job(
    job_id: str = "j1",
    *,
    state: JobState = JobState.RUNNING,
    tier: FlexTier = FlexTier.SUSPENDABLE,
    rate: float | None = 2.35,
    gpus: int = 8,
    stale: bool = False,
    penalty: float = 0.0,
    restart_seconds: float = 0.0,
    min_run_seconds: float = 0.0,
) -> GpuJob:
    return GpuJob(
        job_id, f"job-{job_id}", state, tier, gpus, rate, stale,
        SwitchingCost(restart_seconds=restart_seconds, penalty_usd=penalty), min_run_seconds,
    )


def gpu_node(
    device_id: str,
    *,
    job: GpuJob | None = None,
    circuit: str = "site",
    cap: float = 700.0,
    gpu_watts: float | None = None,
    gpus: int = 8,
    lost: int = 0,
    state_since: float | None = None,
) -> GpuNodeState:
    """An 8x H100 server: host 800 W idle, 1500 W busy; cards idle at 70 W."""
    running = job is not None and job.state is JobState.RUNNING
    each = gpu_watts if gpu_watts is not None else (cap if running else 70.0)
    readings = tuple(
        GpuReading(f"GPU-{device_id}-{i}", i, "NVIDIA H100 80GB HBM3", each, cap, cap, H100, 0.0,
                   100.0 if running else 0.0, 50.0)
        for i in range(gpus - lost)
    )
    return GpuNodeState(
        device_id=device_id, circuit=circuit, gpu_model="H100", gpu_count=gpus,
        host_idle_watts=800.0, host_max_watts=1500.0, gpu_idle_watts=70.0,
        cap_min_watts=H100.min_watts, cap_max_watts=H100.max_watts,
        readings=readings, failure=Failure.NO_ANSWER if lost else None, job=job, state_since=state_since,
    )


def snapshot(
    miners: list[MinerState],
    *,
    budget: float,
    circuits: dict[str, tuple[float, str]] | None = None,
    hashprice: float | None = 45.0,
    power: float | None = 40.0,
    stale: bool = False,
    clock: float = 10_000.0,
    gpu_nodes: list[GpuNodeState] | None = None,
) -> SiteSnapshot:
    """``circuits``: name -> (limit watts, parent)."""
    circuits = circuits or {}
    limits = {"site": budget, **{n: lim for n, (lim, _) in circuits.items()}}
    parents: dict[str, str | None] = {"site": None, **{n: p for n, (_, p) in circuits.items()}}
    return SiteSnapshot(
        at=datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        clock=clock,
        budget_watts=budget,
        circuit_limits=limits,
        circuit_parents=parents,
        miners=tuple(miners),
        prices=Prices(hashprice, power, hashprice_stale=stale, power_stale=stale),
        gpu_nodes=tuple(gpu_nodes or ()),
    )
