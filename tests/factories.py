"""Builders for snapshots in pure tests: a miner is one line, a site a few."""

from __future__ import annotations

from datetime import UTC, datetime

from wattshift.model.miner import Failure, MinerCapability, MinerReading, PowerControl
from wattshift.model.snapshot import (
    EfficiencyCurve,
    GpuNodeState,
    MinerState,
    Prices,
    SiteSnapshot,
)
from wattshift.model.specs import NO_MINER_SWITCHING, MinerSwitching

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
    switching: MinerSwitching = NO_MINER_SWITCHING,
    waking: bool = False,
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
        switching=switching,
        waking=waking,
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
