"""The assembled daemon with its telemetry in worker processes (``drivers.telemetry_workers``):
it reads through them, commands from its own process, meets a cut without going over, and
leaves no process behind when it stops."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from simsite import assert_never_over, running_site

from wattshift.model.budget import BudgetEvent
from wattshift.simulators.site import MinerBatch

MIXED = [
    MinerBatch("luxos", 3, "pdu-a", "Antminer S21"),
    MinerBatch("whatsminer", 3, "site", "Whatsminer M60S"),
    MinerBatch("braiins", 2, "site", "Antminer S19 XP"),
]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def test_a_daemon_reading_through_two_workers_meets_a_cut_and_leaves_no_process(tmp_path: Path) -> None:
    drivers = {"telemetry_workers": 2, "call_timeout_seconds": 3.0}
    async with running_site(MIXED, tmp_path, first_address="127.0.52.1", budget_kw=40, drivers=drivers,
                            circuits=[{"name": "pdu-a", "limit_kw": 12}]) as (sim, daemon, budget, truth):
        telemetry = daemon.fleet.telemetry
        assert telemetry is not None
        pids = [pid for pid in telemetry.worker_pids if pid is not None]
        assert len(pids) == 2 and all(running(pid) for pid in pids)
        first = await daemon.controller.run_once()
        assert all(m.reading is not None for m in first.snapshot.miners), "every miner read through the workers"
        budget.add(BudgetEvent("test-cut", 16_000, datetime.now(UTC) + timedelta(seconds=8)))
        results = []
        for _ in range(3):
            results.extend((await daemon.controller.run_once()).results)
        assert results and all(r.ok for r in results), "the cut was met by commands from the daemon's process"
        await asyncio.sleep(2.0)  # the ramps settle (2 kW/s in these tests)
        assert sim.true_watts() <= 16_000
    assert_never_over(truth)
    assert [pid for pid in pids if running(pid)] == []
