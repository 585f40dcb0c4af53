"""MinerFleet reads that outlive their caller: the answer gap, one read per miner, late answers
landing for the next read, and a dropped driver announced. Real pyasic against simulated LuxOS."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from simulated_miners import collect_pyasic_leftovers

from wattshift.drivers.base import DeviceError
from wattshift.drivers.pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from wattshift.drivers.pyasic_miner import Deadlines
from wattshift.model.miner import Failure, MinerReading
from wattshift.model.specs import SPECS
from wattshift.simulators.luxos import LuxOSMiner
from wattshift.simulators.miner import Fault

pytestmark = pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning")

SLOW_S = 0.6  # the slow miner's every answer; far beyond the gap, well inside the deadline
GAP_S = 0.15
DEADLINES = Deadlines(call_s=3.0, confirm_s=3.0, poll_s=0.02)


class Requests:
    """On the simulator's side: requests received, and the most in progress at once."""

    def __init__(self, miner: LuxOSMiner, delay_s: float = 0.0) -> None:
        self.count = 0
        self.in_progress = 0
        self.peak = 0
        answer: Callable[[dict[str, Any]], Awaitable[Any]] = miner.server.handler

        async def counted(request: dict[str, Any]) -> Any:
            self.count += 1
            self.in_progress += 1
            self.peak = max(self.peak, self.in_progress)
            try:
                await asyncio.sleep(delay_s)
                return await answer(request)
            finally:
                self.in_progress -= 1

        miner.server.handler = counted


def miner(n: int) -> LuxOSMiner:
    return LuxOSMiner(f"127.0.141.{n}", SPECS["Antminer S21"], seed=n, ramp_watts_per_s=1e6)


async def test_a_slow_miner_is_late_for_this_read_and_its_answer_lands_for_the_next():
    fast, slow = miner(1), miner(2)
    await asyncio.gather(fast.start(), slow.start())
    fleet = MinerFleet([MinerTarget(m.host, firmware="luxos") for m in (fast, slow)],
                       FleetSettings(deadlines=DEADLINES))
    try:
        await fleet.discover()
        requests = Requests(slow, delay_s=SLOW_S)

        first = await fleet.read_all(answer_gap_s=GAP_S)
        assert isinstance(first[fast.host], MinerReading)
        late = first[slow.host]
        assert isinstance(late, DeviceError) and late.failure is Failure.TIMEOUT
        assert "still being read" in late.detail

        again = await fleet.read_all(answer_gap_s=GAP_S)  # asked again while its read goes on
        assert isinstance(again[slow.host], DeviceError)
        assert requests.peak == 1  # never two reads of one miner at once

        await asyncio.sleep(SLOW_S * 4)  # its read lands meanwhile
        asked = requests.count
        landed = await fleet.read_all(answer_gap_s=GAP_S)
        assert isinstance(landed[slow.host], MinerReading)
        assert requests.count == asked  # the answer that landed, not a new read

        fresh = await fleet.read_all()  # no gap: wait for every answer
        assert isinstance(fresh[slow.host], MinerReading) and requests.count > asked
    finally:
        await fleet.close()
        await asyncio.gather(fast.stop(), slow.stop())
        await collect_pyasic_leftovers()


async def test_with_no_answer_at_all_nothing_is_cut_short_and_close_stops_the_reads_in_flight():
    hung, well = miner(3), miner(5)
    await asyncio.gather(hung.start(), well.start())
    fleet = MinerFleet([MinerTarget(m.host, firmware="luxos") for m in (hung, well)],
                       FleetSettings(deadlines=DEADLINES))
    try:
        await fleet.discover()
        hung.set_fault(Fault.HANG)
        # Alone, the hung miner is waited for to its own deadline: there is nothing else to act on.
        alone = (await fleet.read([hung.host], answer_gap_s=GAP_S))[hung.host]
        assert isinstance(alone, DeviceError) and alone.failure is Failure.TIMEOUT
        assert "still being read" not in alone.detail
        # Beside a miner that answers, it is late, and its read goes on.
        late = (await fleet.read_all(answer_gap_s=GAP_S))[hung.host]
        assert isinstance(late, DeviceError) and "still being read" in late.detail
        assert any(t.get_name() == f"read {hung.host}" for t in asyncio.all_tasks())
        await fleet.close()
        assert not any(t.get_name() == f"read {hung.host}" for t in asyncio.all_tasks())
    finally:
        await asyncio.gather(hung.stop(), well.stop())
        await collect_pyasic_leftovers()


async def test_an_answer_that_landed_earlier_does_not_start_the_gap():
    hung, slow = miner(6), miner(7)
    await asyncio.gather(hung.start(), slow.start())
    fleet = MinerFleet([MinerTarget(m.host, firmware="luxos") for m in (hung, slow)],
                       FleetSettings(deadlines=DEADLINES))
    try:
        await fleet.discover()
        Requests(slow, delay_s=GAP_S * 3)
        hung.set_fault(Fault.HANG)
        first = await fleet.read_all(answer_gap_s=GAP_S)
        assert isinstance(first[slow.host], MinerReading)  # the first answer, however slow
        assert isinstance(first[hung.host], DeviceError)
        await asyncio.sleep(DEADLINES.call_s + 0.5)  # the hung miner's timeout lands meanwhile
        second = await fleet.read_all(answer_gap_s=GAP_S)
        # The landed timeout is no answer of this call: the slow miner is still waited for.
        assert isinstance(second[slow.host], MinerReading)
        assert isinstance(second[hung.host], DeviceError) and second[hung.host].failure is Failure.TIMEOUT
    finally:
        await fleet.close()
        await asyncio.gather(hung.stop(), slow.stop())
        await collect_pyasic_leftovers()


async def test_a_dropped_driver_is_announced_once():
    gone = miner(4)
    await gone.start()
    settings = FleetSettings(deadlines=DEADLINES, reidentify_after=2, identify_retry_s=60.0)
    fleet = MinerFleet([MinerTarget(gone.host)], settings)  # firmware "auto": identified by pyasic
    dropped: Counter[str] = Counter()
    fleet.on_capability_lost(lambda device_id: dropped.update([device_id]))
    try:
        await fleet.discover()
        assert fleet.capability(gone.host) is not None
        gone.set_fault(Fault.NO_ANSWER)
        await fleet.read_all()
        assert dropped == Counter()  # one lost read is not yet a reason
        await fleet.read_all()
        assert dropped == Counter({gone.host: 1}) and fleet.capability(gone.host) is None
        for _ in range(3):  # identification fails from now on: there is no driver to drop
            await fleet.read_all()
        assert dropped == Counter({gone.host: 1})
    finally:
        await fleet.close()
        await gone.stop()
        await collect_pyasic_leftovers()
