"""The fast shed with real pyasic against simulated LuxOS miners: a budget event is shed from
the last snapshot while the loop's read of the fleet is still under way, and the simulators'
true draw, sampled every 20 ms, never goes over a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from simsite import assert_never_over, running_site

from wattshift.daemon.journal.entries import EntryKind
from wattshift.model.budget import BudgetEvent
from wattshift.simulators.site import MinerBatch

MINERS = [MinerBatch("luxos", 6, "site", "Antminer S21")]


async def until(predicate: Callable[[], object], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_budget_event_is_shed_before_the_fleet_read_under_way_completes(tmp_path):
    async with running_site(MINERS, tmp_path, first_address="127.0.52.1", budget_kw=40,
                            site_extra={"tick_seconds": 3600}) as (sim, daemon, _budget, truth):
        controller, fleet = daemon.controller, daemon.fleet
        await controller.run_once()
        carried_out: list[str] = []
        for miner in sim.miners:
            def control(action: Any, miner: Any = miner, carry_out: Any = miner.control) -> Any:
                carried_out.append(miner.host)
                return carry_out(action)
            miner.control = control
        # The loop's next read of the fleet really reads (pyasic, the sockets), and does not
        # come back until the test lets it.
        real_read_all, held = fleet.read_all, asyncio.Event()
        reads_started: list[bool] = []
        reads_done: list[bool] = []

        async def read_all(**kwargs: Any) -> Any:
            reads_started.append(True)
            readings = await real_read_all(**kwargs)
            await held.wait()
            reads_done.append(True)
            return readings

        fleet.read_all = read_all
        stop = asyncio.Event()
        loop = asyncio.create_task(controller.run(stop))
        try:
            await until(lambda: reads_started, 5)  # the loop's first tick is in its read, held
            draw = sim.true_watts()
            start = datetime.now(UTC) + timedelta(seconds=8)  # what the MQTT budget command adds
            await controller.add_budget_event(BudgetEvent("fast", draw * 0.5, start))
            await until(lambda: controller.last_fast_shed is not None, 8)
            shed = controller.last_fast_shed
            assert shed is not None and shed.results and all(r.ok for r in shed.results)
            assert reads_done == [], "the sheds waited for the fleet read"
            assert set(carried_out) >= {r.step.device_id for r in shed.results}
            await until(lambda: sim.true_watts() <= draw * 0.5, 8)  # the ramps come down (2 kW/s)
            assert reads_done == []
            held.set()
            await until(lambda: len(reads_done) >= 2, 30)  # the held tick, then the one after the sheds
        finally:
            held.set()
            stop.set()
            await asyncio.wait_for(loop, 30)
        decisions = await daemon.journal.query(kind=EntryKind.DECISION)
        fast = [d for d in decisions if d.device is None and d.data.get("fast_shed")]
        assert len(fast) == 1 and fast[0].summary.startswith("fast shed (a budget event)")
    assert_never_over(truth)
