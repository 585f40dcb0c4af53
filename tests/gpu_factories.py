"""Builders for GPU nodes in pure tests (beside tests/factories.py, which builds miners).

The default node is an 8x H100 SXM server (DESIGN.md section 4): cards capped 200-700 W, idle
80 W each, the host 500 W idle and 1.5 kW busy, so 7.1 kW at full caps.
"""

from __future__ import annotations

import dataclasses

from wattshift.model.gpu import GpuLimits, GpuReading
from wattshift.model.jobs import FlexTier, JobState, SwitchingCost
from wattshift.model.miner import Failure
from wattshift.model.snapshot import GpuJob, GpuNodeState, SiteSnapshot

H100_FULL_NODE_WATTS = 1500 + 8 * 700


def job(
    name: str = "train",
    *,
    tier: FlexTier = FlexTier.SUSPENDABLE,
    state: JobState = JobState.RUNNING,
    gpus: int = 8,
    usd_per_gpu_hour: float | None = 2.35,
    stale: bool = False,
    penalty: float = 0.0,
    restart_seconds: float = 0.0,
    min_run_seconds: float = 0.0,
) -> GpuJob:
    switching = SwitchingCost(restart_seconds=restart_seconds, penalty_usd=penalty)
    return GpuJob(f"j-{name}", name, state, tier, gpus, usd_per_gpu_hour, stale, switching, min_run_seconds)


def gpu_node(
    device_id: str,
    *,
    circuit: str = "site",
    job: GpuJob | None = None,
    cap: float = 700.0,
    card_watts: float | None = None,
    gpus: int = 8,
    failure: Failure | None = None,
    lost: int = 0,
    state_since: float | None = None,
) -> GpuNodeState:
    """``lost``: cards gone from the bus (the node then reads as failed)."""
    running = job is not None and job.state is JobState.RUNNING
    watts = card_watts if card_watts is not None else (cap if running else 80.0)
    readings = tuple(
        GpuReading(
            uuid=f"GPU-{device_id}-{i}", index=i, model="H100 SXM", watts=watts, limit_watts=cap,
            enforced_limit_watts=cap, limits=GpuLimits(200.0, 700.0, 700.0), energy_joules=None,
            utilisation_pct=100.0 if running else 0.0, temperature_c=50.0,
        )
        for i in range(gpus - lost)
    )
    if lost:
        failure = failure or Failure.NO_ANSWER
    return GpuNodeState(
        device_id=device_id, circuit=circuit, gpu_model="H100", gpu_count=gpus,
        host_idle_watts=500.0, host_max_watts=1500.0, gpu_idle_watts=80.0,
        cap_min_watts=200.0, cap_max_watts=700.0, readings=readings, failure=failure,
        job=job, state_since=state_since,
    )


def with_gpus(snapshot: SiteSnapshot, *nodes: GpuNodeState) -> SiteSnapshot:
    return dataclasses.replace(snapshot, gpu_nodes=tuple(nodes))
