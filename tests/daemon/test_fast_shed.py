"""The fast shed (daemon/control/fast_shed.py): a limit that drops is shed from the last
snapshot, without a read of the fleet, and only where that is safe.

The fleet here is a fake whose ``read_all`` can be held closed: a shed that went out while it is
closed went out without a read. The drivers keep what they were told, and the site's true worst
case is judged from that (each miner at the higher of its limit and what it drew, as the
snapshot counts it), not from the controller's own figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.control.controller import Controller
from wattshift.daemon.control.fast_shed import CommandsSince, lowering, next_budget_change
from wattshift.daemon.control.recorder import NullRecorder
from wattshift.daemon.control.sequencer import Action, Step
from wattshift.drivers.base import DeviceError
from wattshift.drivers.prices import FixedPrice
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.miner import Failure, MinerCapability, MinerReading, PowerControl
from wattshift.policies.merit_order import MeritOrderPolicy

WATTS = MinerCapability(PowerControl.WATTS, 1800, 4000)
HOSTS = [f"10.0.0.{i}" for i in range(1, 5)]


class FakeMiner:
    """One miner's driver: what it was told, and what a read of it says."""

    def __init__(self, device_id: str, log: list[tuple[str, str, float]], *, watts: float = 3500.0,
                 limit: float = 3500.0) -> None:
        self.device_id = device_id
        self.capability = WATTS
        self.watts, self.limit, self.on = watts, limit, True
        self.log = log
        self.refuse = False

    @property
    def worst(self) -> float:
        """What it may draw: the higher of its limit and its draw while on; its draw asleep."""
        return max(self.watts, self.limit) if self.on else self.watts

    async def read(self) -> MinerReading:
        return MinerReading(self.device_id, "Antminer S21", "fake", self.watts, self.limit, 200.0 if self.on else 0.0,
                            self.on)

    def _told(self, what: str, watts: float) -> None:
        if self.refuse:
            raise DeviceError(self.device_id, Failure.REFUSED, "refused")
        self.log.append((what, self.device_id, watts))

    async def set_power_limit(self, watts: float) -> float:
        self._told("limit", watts)
        self.limit = watts
        self.watts = min(self.watts, watts)  # it comes down at once; up, only as far as it is let
        return watts

    async def sleep(self) -> None:
        self._told("sleep", 0.0)
        self.on, self.watts = False, 15.0

    async def wake(self) -> None:
        self._told("wake", self.limit)
        self.on = True


class GatedFleet:
    """A fleet whose whole read (``read_all``) waits while ``gate`` is clear."""

    def __init__(self, miners: Mapping[str, FakeMiner]) -> None:
        self.miners = dict(miners)
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads_started = 0
        self.reads_done = 0

    async def read_all(self, *, answer_gap_s: float | None = None) -> dict[str, MinerReading | DeviceError]:
        self.reads_started += 1
        await self.gate.wait()
        readings: dict[str, MinerReading | DeviceError] = {d: await m.read() for d, m in self.miners.items()}
        self.reads_done += 1
        return readings

    async def read(self, device_ids: list[str]) -> dict[str, MinerReading | DeviceError]:
        return {d: await self.miners[d].read() for d in device_ids}

    def driver(self, device_id: str) -> FakeMiner | None:
        return self.miners.get(device_id)

    def capability(self, device_id: str) -> MinerCapability | None:
        return WATTS if device_id in self.miners else None

    def on_capability_lost(self, callback: Callable[[str], None]) -> None:
        pass


class Decisions(NullRecorder):
    """A recorder that keeps the decisions; ``hold`` (when set) keeps the next one waiting."""

    def __init__(self) -> None:
        self.plans: list[Any] = []
        self.summaries: list[str] = []
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def decision(self, snapshot: Any, allocation: Any, plan: Any, *, dry_run: bool) -> None:
        self.plans.append(plan)
        self.summaries.append(allocation.summary)
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.held.set()
            await hold.wait()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(*, watts: float = 4000.0, limit: float = 4000.0, budget_kw: float = 20.0, tick_seconds: float = 3600,
         lead_seconds: float = 60.0, clock: Callable[[], float] | None = None, dry_run: bool = False,
         ) -> tuple[Controller, GatedFleet, list[tuple[str, str, float]], Decisions]:
    log: list[tuple[str, str, float]] = []
    fleet = GatedFleet({h: FakeMiner(h, log, watts=watts, limit=limit) for h in HOSTS})
    site = SiteConfig.model_validate({"name": "t", "budget_kw": budget_kw, "tick_seconds": tick_seconds,
                                      "miners": [{"addresses": HOSTS}]})
    recorder = Decisions()
    controller = Controller(site, fleet, MeritOrderPolicy.from_options({"min_dwell_seconds": 0}),
                            hashprice=FixedPrice(45.0), power_price=FixedPrice(40.0),
                            budget=BudgetSchedule(site.budget_watts, lead_seconds=lead_seconds),
                            recorder=recorder, dry_run=dry_run, **({"clock": clock} if clock else {}))
    return controller, fleet, log, recorder


def cut(kw: float, *, name: str = "cut", start: datetime | None = None) -> BudgetEvent:
    return BudgetEvent(name, kw * 1000, start or datetime.now(UTC))


def true_worst(fleet: GatedFleet) -> float:
    return sum(m.worst for m in fleet.miners.values())


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- without the loop: shed_now itself ------------------------------------------------------------


async def test_a_cut_is_shed_from_the_last_snapshot_while_the_fleet_read_is_held():
    controller, fleet, log, recorder = make()
    await controller.run_once()
    assert log == []  # 16 kW under 20 kW: nothing to do
    fleet.gate.clear()  # from here on, a read of the fleet does not come back
    await controller.add_budget_event(cut(8))
    report = await asyncio.wait_for(controller.shed_now("test"), 10)
    assert report is not None and report.results, "no fast shed"
    assert fleet.reads_done == 1 and fleet.reads_started == 1, "the fast shed read the fleet"
    assert all(r.ok and r.step.is_shed for r in report.results)
    assert true_worst(fleet) <= 8000
    assert recorder.plans[-1].fast_shed and not recorder.plans[-1].grants
    assert recorder.summaries[-1].startswith("fast shed (test): site limit dropped")
    assert controller.last_fast_shed is report
    fleet.gate.set()


async def test_a_budget_that_did_not_drop_sheds_nothing():
    controller, _fleet, log, _ = make()
    await controller.run_once()
    assert await controller.shed_now("test") is None  # the same budget as the snapshot's
    later = datetime.now(UTC) + timedelta(hours=2)  # beyond the lead window: not yet in force
    await controller.add_budget_event(cut(8, start=later))
    assert await controller.shed_now("test") is None
    assert log == []


async def test_a_cut_below_what_sheds_reach_sheds_everything_it_can():
    controller, fleet, _log, _ = make()
    await controller.run_once()
    silent = HOSTS[0]
    fleet.gate.clear()
    # A miner that lost its driver since the snapshot is unknown: at its maximum, sent nothing.
    controller._worst_case_rose(silent, "driver dropped", Failure.UNIDENTIFIED)
    await controller.add_budget_event(cut(0))
    report = await controller.shed_now("test")
    assert report is not None
    assert sorted(r.step.device_id for r in report.results) == HOSTS[1:]
    assert all(r.step.action is Action.SLEEP for r in report.results)
    assert report.snapshot.load(silent).worst_case_watts == WATTS.max_watts
    assert not any(m.on for h, m in fleet.miners.items() if h != silent)
    fleet.gate.set()


async def test_grants_sent_after_the_snapshot_count_at_what_they_granted():
    # The tick raises every limit from 2 kW to the most the budget allows; its snapshot still
    # shows 2 kW. A cut to what that snapshot counts must still shed: the miners may now draw
    # their new limits.
    controller, fleet, log, _ = make(watts=2000.0, limit=2000.0, budget_kw=16)
    first = await controller.run_once()
    raised = [s for s in first.plans[-1].grants if s.action is Action.SET_LIMIT]
    assert raised, "the first tick granted nothing: the test needs a grant after the snapshot"
    assert sum(m.worst_case_watts for m in first.snapshot.miners) == 8000
    fleet.gate.clear()
    log.clear()
    await controller.add_budget_event(cut(8.5))
    report = await controller.shed_now("test")
    assert report is not None and report.results
    assert true_worst(fleet) <= 8500
    fleet.gate.set()


async def test_a_second_cut_before_a_read_never_raises_what_the_first_lowered():
    controller, fleet, log, _ = make()
    await controller.run_once()
    fleet.gate.clear()
    await controller.add_budget_event(cut(9, name="first"))
    first = await controller.shed_now("first")
    assert first is not None and first.results
    told = {d: w for _, d, w in log}
    await controller.add_budget_event(cut(6, name="second"))
    second = await controller.shed_now("second")
    assert second is not None
    for result in second.results:
        assert result.step.watts < told.get(result.step.device_id, float("inf")), result.step.describe()
    assert true_worst(fleet) <= 6000
    fleet.gate.set()


async def test_a_miner_whose_command_failed_counts_at_its_maximum_and_is_sent_nothing():
    controller, fleet, log, _ = make(watts=3000.0, limit=3000.0, budget_kw=12.0)
    await controller.run_once()
    assert log == [], "the test needs a snapshot that counts each miner below its maximum"
    stubborn = HOSTS[1]
    fleet.miners[stubborn].refuse = True
    await controller.add_budget_event(cut(7, name="first"))
    first = await controller.shed_now("first")
    assert first is not None
    if not any(r.step.device_id == stubborn and not r.ok for r in first.results):
        pytest.skip("the policy did not shed the refusing miner")
    await controller.add_budget_event(cut(4, name="second"))
    second = await controller.shed_now("second")
    assert second is not None
    assert second.snapshot.load(stubborn).worst_case_watts == WATTS.max_watts
    assert all(r.step.device_id != stubborn for r in second.results)


# -- the fallbacks ---------------------------------------------------------------------------------


async def test_no_snapshot_yet_means_no_fast_shed():
    controller, _, log, _ = make()
    await controller.add_budget_event(cut(8))
    assert await controller.shed_now("test") is None
    assert log == []


@pytest.mark.parametrize("hold", ["dry_run", "paused"])
async def test_held_actuation_means_no_fast_shed(hold):
    controller, _, log, _ = make(dry_run=hold == "dry_run")
    if hold == "paused":
        controller.paused = True
    await controller.run_once()
    await controller.add_budget_event(cut(8))
    assert await controller.shed_now("test") is None
    assert log == []


async def test_an_old_snapshot_means_no_fast_shed():
    clock = Clock()
    controller, _, log, _ = make(clock=clock, tick_seconds=15)
    await controller.run_once()
    clock.now += 29  # within two ticks: still shed from
    await controller.add_budget_event(cut(12, name="first"))
    assert await controller.shed_now("test") is not None
    clock.now += 31
    log.clear()
    await controller.add_budget_event(cut(6, name="second"))
    assert await controller.shed_now("test") is None
    assert log == []


# -- in the loop ----------------------------------------------------------------------------------


async def test_in_the_loop_a_cut_during_a_fleet_read_is_shed_before_the_read_returns():
    controller, fleet, _log, _recorder = make()
    await controller.run_once()
    fleet.gate.clear()
    stop = asyncio.Event()
    loop = asyncio.create_task(controller.run(stop))
    try:
        await until(lambda: fleet.reads_started == 2)  # the loop's tick is reading, held
        await controller.add_budget_event(cut(8))
        await until(lambda: controller.last_fast_shed is not None)
        assert fleet.reads_done == 1, "the sheds waited for a read"
        assert true_worst(fleet) <= 8000
        fleet.gate.set()
        # The tick that was reading acts after the sheds and, its picture older than them,
        # grants nothing; the one after it reads again.
        await until(lambda: controller.last_report is not None and fleet.reads_done >= 3)
    finally:
        stop.set()
        fleet.gate.set()
        await asyncio.wait_for(loop, 10)
    assert true_worst(fleet) <= 8000


async def test_in_the_loop_a_cut_while_a_tick_acts_is_shed_as_that_tick_ends():
    controller, fleet, log, recorder = make()
    await controller.run_once()
    release = asyncio.Event()
    recorder.hold = release  # the loop's first tick stops at its decision: it is acting
    stop = asyncio.Event()
    loop = asyncio.create_task(controller.run(stop))
    try:
        await until(recorder.held.is_set)
        await controller.add_budget_event(cut(8))
        await asyncio.sleep(0.2)
        assert log == [] and controller.last_fast_shed is None, "shed while a tick was acting"
        release.set()
        await until(lambda: controller.last_fast_shed is not None)
        assert true_worst(fleet) <= 8000
    finally:
        stop.set()
        release.set()
        await asyncio.wait_for(loop, 10)


async def test_in_the_loop_the_schedule_stepping_down_is_shed_without_a_read():
    controller, fleet, _log, _ = make(lead_seconds=1.0)
    await controller.run_once()
    stop = asyncio.Event()
    loop = asyncio.create_task(controller.run(stop))
    try:
        await until(lambda: fleet.reads_done == 2)  # the loop's first tick; the next is an hour away
        fleet.gate.clear()
        # Added behind the loop's back (as a restored event is): only the schedule's clock says
        # when it comes within its lead time, 0.5 s from now.
        controller.budget.add(cut(8, start=datetime.now(UTC) + timedelta(seconds=1.5)))
        await until(lambda: controller.last_fast_shed is not None)
        assert fleet.reads_done == 2
        assert true_worst(fleet) <= 8000
    finally:
        stop.set()
        fleet.gate.set()
        await asyncio.wait_for(loop, 10)


# -- the pure parts ---------------------------------------------------------------------------------


def _step(device_id: str, action: Action, watts: float) -> Step:
    return Step(device_id, "site", action, watts, 3500.0, watts, "test")


def test_lowering_keeps_only_what_goes_below_the_last_command():
    since = CommandsSince()
    since.sent([_step("a", Action.SLEEP, 0.0), _step("b", Action.SET_LIMIT, 2000.0)])
    sheds = [_step("a", Action.SET_LIMIT, 1800.0), _step("b", Action.SET_LIMIT, 2500.0),
             _step("b", Action.SET_LIMIT, 1900.0), _step("c", Action.SLEEP, 0.0)]
    kept = lowering(sheds, since.commanded())
    assert [(s.device_id, s.watts) for s in kept] == [("b", 1900.0), ("c", 0.0)]


def test_a_new_snapshot_forgets_only_what_was_sent_before_its_reads():
    since = CommandsSince()
    since.sent([_step("a", Action.SLEEP, 0.0)])
    mark = since.mark()
    since.sent([_step("b", Action.SLEEP, 0.0)])
    since.worst_rose("c", Failure.NO_ANSWER)
    since.forget(mark)
    assert [s.device_id for _, s in since.steps] == ["b"] and list(since.rose) == ["c"]


def test_the_next_budget_change_is_where_an_event_enters_or_leaves_the_lead_window():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    schedule = BudgetSchedule(20_000, lead_seconds=60)
    assert next_budget_change(schedule, now) is None
    schedule.add(BudgetEvent("e", 8000, now + timedelta(minutes=10), now + timedelta(minutes=20)))
    assert next_budget_change(schedule, now) == now + timedelta(minutes=9)
    assert next_budget_change(schedule, now + timedelta(minutes=9)) == now + timedelta(minutes=10)
    assert next_budget_change(schedule, now + timedelta(minutes=10)) == now + timedelta(minutes=19)
