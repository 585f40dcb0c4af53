"""DESIGN.md invariants 1-3 with real pyasic, real sockets and faults injected, judged by the
simulators' true draw sampled every 20 ms: no test may see a limit exceeded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from simsite import assert_never_over, running_site

from wattshift.daemon.control.sequencer import Action
from wattshift.daemon.journal.entries import EntryKind
from wattshift.model.budget import BudgetEvent
from wattshift.model.miner import Failure
from wattshift.simulators.miner import Fault
from wattshift.simulators.site import MinerBatch

MIXED = [
    MinerBatch("luxos", 3, "pdu-a", "Antminer S21"),
    MinerBatch("whatsminer", 3, "site", "Whatsminer M60S"),
    MinerBatch("braiins", 2, "site", "Antminer S19 XP"),
]


def cut(budget, kw: float, in_seconds: float = 8.0) -> None:
    start = datetime.now(UTC) + timedelta(seconds=in_seconds)
    budget.add(BudgetEvent("test-cut", kw * 1000, start))


async def test_an_announced_cut_is_met_before_it_starts(tmp_path):
    async with running_site(MIXED, tmp_path, first_address="127.0.10.1", budget_kw=40,
                            circuits=[{"name": "pdu-a", "limit_kw": 12}]) as (sim, daemon, budget, truth):
        await daemon.controller.run_once()
        cut(budget, 16)
        for _ in range(3):
            report = await daemon.controller.run_once()
        await asyncio.sleep(2.0)  # the ramps settle (2 kW/s in these tests)
        assert sim.true_watts() <= 16_000
        assert report.snapshot.budget_watts == 16_000
    assert_never_over(truth)


# pyasic never closes a socket whose call was cancelled by our deadline (the hanging miner);
# the garbage collector then warns. Known upstream behaviour, harmless for the daemon.
@pytest.mark.filterwarnings("ignore:Exception ignored in.*StreamWriter:pytest.PytestUnraisableExceptionWarning")
async def test_faulty_miners_are_counted_at_their_worst_and_the_rest_make_room(tmp_path):
    async with running_site(MIXED, tmp_path, first_address="127.0.11.1", budget_kw=40,
                            circuits=[{"name": "pdu-a", "limit_kw": 12}]) as (sim, daemon, budget, truth):
        await daemon.controller.run_once()
        hang, ignore, garbage, gone = sim.miners[0], sim.miners[3], sim.miners[6], sim.miners[4]
        hang.set_fault(Fault.HANG)
        ignore.set_fault(Fault.IGNORE)
        garbage.set_fault(Fault.GARBAGE)
        cut(budget, 20)
        report = await daemon.controller.run_once()
        # The miner that vanishes does so right after its shed was sent, mid-ramp.
        gone.set_fault(Fault.NO_ANSWER)
        for _ in range(3):
            report = await daemon.controller.run_once()
        states = {m.device_id: m for m in report.snapshot.miners}
        for faulty in (hang, garbage, gone):
            assert not states[faulty.host].controllable
            assert states[faulty.host].worst_case_watts == states[faulty.host].max_watts
        # The ignoring miner said OK; the read-back caught it.
        ignored = [r for r in report.results if r.step.device_id == ignore.host]
        assert ignored == [] or all(r.failure is Failure.IGNORED for r in ignored)
        assert report.snapshot.budget_watts == 20_000
        worst = sum(m.worst_case_watts for m in report.snapshot.miners)
        assert worst <= 20_000
        await asyncio.sleep(0.5)
    assert_never_over(truth)


async def test_a_grant_waits_until_telemetry_confirms_the_shed(tmp_path):
    # One PDU of 4.2 kW: an S19 XP at full power and an idle S21. The S21 earns more per
    # watt, so power must move from the XP to it, and the S21 may wake only once the XP's
    # draw has really fallen.
    batches = [MinerBatch("braiins", 1, "pdu", "Antminer S19 XP"), MinerBatch("luxos", 1, "pdu", "Antminer S21")]
    async with running_site(batches, tmp_path, first_address="127.0.12.1", budget_kw=50,
                            circuits=[{"name": "pdu", "limit_kw": 4.2}]) as (sim, daemon, _budget, truth):
        xp, s21 = sim.miners
        s21.physics.sleep(settled=True)
        xp.physics.set_target(3600)
        await asyncio.sleep(0.1)
        report = await daemon.controller.run_once()
        first, *rest = report.plans
        assert [s.device_id for s in first.sheds] == [xp.host]
        assert [(s.device_id, s.action) for s in first.deferred] == [(s21.host, Action.WAKE)]
        assert rest and [s.device_id for s in rest[0].grants] == [s21.host]
        entries = await daemon.journal.query(kind=EntryKind.COMMAND)
        assert [e.device for e in entries] == [xp.host, s21.host]
        assert entries[0].summary.startswith("shed") and entries[1].summary.startswith("grant")
        await asyncio.sleep(0.5)
        assert s21.physics.mining
    assert_never_over(truth)


async def test_dry_run_decides_and_journals_but_sends_nothing(tmp_path):
    async with running_site([MinerBatch("luxos", 3, "site", "Antminer S21")], tmp_path,
                            first_address="127.0.13.1", budget_kw=6,
                            dry_run=True) as (sim, daemon, _budget, _truth):
        before = {m.host: m.physics.target_watts for m in sim.miners}
        report = await daemon.controller.run_once()
        assert report.plans[0].now, "the tight budget should call for sheds"
        assert report.results == ()
        assert {m.host: m.physics.target_watts for m in sim.miners} == before
        decisions = await daemon.journal.query(kind=EntryKind.DECISION)
        assert decisions and decisions[0].data["dry_run"] is True


async def test_a_budget_event_wakes_the_loop_before_its_next_tick(tmp_path):
    batches = [MinerBatch("luxos", 2, "site", "Antminer S21")]
    async with running_site(batches, tmp_path, first_address="127.0.15.1",
                            budget_kw=10) as (_sim, daemon, _budget, truth):
        controller = daemon.controller
        assert controller.site.tick_seconds == 15  # far longer than this test waits
        stop = asyncio.Event()
        loop = asyncio.create_task(controller.run(stop))
        try:
            while controller.last_report is None:
                await asyncio.sleep(0.05)
            first = controller.last_report
            event = BudgetEvent("dr-1", 4_000, datetime.now(UTC) + timedelta(seconds=5))
            await controller.add_budget_event(event)
            async with asyncio.timeout(5):
                while controller.last_report is first:
                    await asyncio.sleep(0.05)
            assert controller.last_report.snapshot.budget_watts == 4_000
            await asyncio.sleep(1.5)  # the shed ramps down under the monitor's eye
        finally:
            stop.set()
            await loop
        events = await daemon.journal.query(kind=EntryKind.EVENT)
        assert any(e.summary.startswith("budget event dr-1: 4.0 kW") for e in events)
    assert_never_over(truth)


async def shed_times(controller, miners) -> tuple[object, dict[str, float]]:
    """Run one tick; return its report and, for each miner whose target or state changed, how
    many seconds after the tick began the change reached the simulator."""
    before = {m.host: (m.physics.target_watts, m.physics.mining) for m in miners}
    changed: dict[str, float] = {}
    started = time.monotonic()
    tick = asyncio.create_task(controller.run_once())
    while not tick.done():
        for m in miners:
            if m.host not in changed and (m.physics.target_watts, m.physics.mining) != before[m.host]:
                changed[m.host] = time.monotonic() - started
        await asyncio.sleep(0.01)
    return await tick, changed


@pytest.mark.filterwarnings("ignore:Exception ignored in.*StreamWriter:pytest.PytestUnraisableExceptionWarning")
async def test_one_hung_miner_does_not_hold_back_the_sheds_to_the_others(tmp_path):
    """Issue 10 item 6: every shed used to wait for the hung miner's whole read deadline."""
    call_s = 8.0
    batches = [MinerBatch("luxos", 3, "site", "Antminer S21"), MinerBatch("whatsminer", 2, "site", "Whatsminer M60S")]
    async with running_site(batches, tmp_path, first_address="127.0.142.1", budget_kw=40,
                            drivers={"call_timeout_seconds": call_s}) as (sim, daemon, budget, truth):
        controller = daemon.controller
        await controller.run_once()
        hung, healthy = sim.miners[0], sim.miners[1:]
        hung.set_fault(Fault.HANG)
        cut(budget, 9, in_seconds=12)
        report, changed = await shed_times(controller, healthy)
        shed = {s.device_id for s in report.plans[0].sheds}
        assert shed, "the cut should call for sheds"
        assert hung.host not in shed
        # Each shed reached its miner well before the hung miner's read deadline, not after it.
        print(f"sheds reached the miners {sorted(changed.values())} s into the tick; read deadline {call_s} s")
        assert all(changed.get(host, call_s) < call_s / 2 for host in shed), (shed, changed)
        states = {m.device_id: m for m in report.snapshot.miners}
        assert states[hung.host].failure is Failure.TIMEOUT
        assert states[hung.host].worst_case_watts == states[hung.host].max_watts
        # The plan fits the cut with the hung miner counted at its most.
        steps = {s.device_id: s for s in report.plans[-1].now}
        worst_after = sum(steps[m.device_id].worst_after if m.device_id in steps else m.worst_case_watts
                          for m in report.snapshot.miners)
        assert worst_after <= report.snapshot.budget_watts
        await asyncio.sleep(1.0)
    assert_never_over(truth)


async def test_a_shed_miner_that_goes_dark_while_confirmed_is_planned_for_at_once(tmp_path):
    """Issue 10 item 7: its worst case rose while the loop waited out the whole confirmation."""
    confirm_s = 20.0
    batches = [MinerBatch("braiins", 1, "pdu", "Antminer S19 XP"), MinerBatch("luxos", 1, "pdu", "Antminer S21")]
    async with running_site(batches, tmp_path, first_address="127.0.143.1", budget_kw=50,
                            circuits=[{"name": "pdu", "limit_kw": 4.2}],
                            drivers={"confirm_timeout_seconds": confirm_s}) as (sim, daemon, _, truth):
        xp, s21 = sim.miners
        s21.physics.sleep(settled=True)
        xp.physics.set_target(3600)
        await asyncio.sleep(0.1)
        full = xp.physics.target_watts

        async def dark_once_shed() -> None:
            while xp.physics.target_watts == full:
                await asyncio.sleep(0.005)
            xp.set_fault(Fault.NO_ANSWER)

        watcher = asyncio.create_task(dark_once_shed())
        report = await daemon.controller.run_once()
        await watcher
        first, *rest = report.plans
        assert [s.device_id for s in first.sheds] == [xp.host] and first.deferred
        print(f"tick took {report.seconds:.1f} s; confirmation timeout {confirm_s} s")
        assert report.seconds < confirm_s / 2, report.seconds  # not the whole confirmation
        assert rest, "the tick should plan again from a fresh snapshot"
        again = {m.device_id: m for m in report.snapshot.miners}[xp.host]
        assert not again.controllable and again.worst_case_watts == again.max_watts
        assert any("worst case rose" in note for note in report.notes)
        assert not s21.physics.mining  # the grant still does not fit beside a miner gone dark
        await asyncio.sleep(0.5)
    assert_never_over(truth)


async def test_a_driver_dropped_between_ticks_is_planned_for_at_once(tmp_path):
    """Issue 10 item 7: a miner whose driver is dropped after lost reads is counted at the most
    an unidentified miner may draw, a worst case that rises with no command sent."""
    batches = [MinerBatch("whatsminer", 2, "site", "Whatsminer M60S")]
    async with running_site(batches, tmp_path, first_address="127.0.144.1", budget_kw=7.8,
                            identify=True) as (sim, daemon, _, truth):
        controller = daemon.controller
        assert controller.site.tick_seconds == 15  # far longer than this test waits
        stop = asyncio.Event()
        loop = asyncio.create_task(controller.run(stop))
        try:
            while controller.last_report is None:
                await asyncio.sleep(0.05)
            gone, other = sim.miners
            first = controller.last_report
            known = {m.device_id: m for m in first.snapshot.miners}[gone.host]
            assert known.controllable
            gone.set_fault(Fault.NO_ANSWER)
            # Reads that land between ticks (a late read outliving its plan does): the third
            # lost read drops the cached driver.
            for _ in range(3):
                await daemon.fleet.read([gone.host])
            assert daemon.fleet.capability(gone.host) is None
            async with asyncio.timeout(5):
                while controller.last_report is first:
                    await asyncio.sleep(0.05)
            report = controller.last_report
            state = {m.device_id: m for m in report.snapshot.miners}[gone.host]
            assert not state.controllable
            assert state.worst_case_watts > known.capability.max_watts  # unidentified: larger still
            # The rise put the site's worst case over the budget: the other miner is shed.
            assert [s.device_id for s in report.plans[0].sheds] == [other.host]
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await loop
    assert_never_over(truth)


class HungFeed:
    """A price source that accepts the request and never answers."""

    in_flight = 0
    most_at_once = 0

    def __init__(self, name: str) -> None:
        self.name = name

    async def latest(self):
        HungFeed.in_flight += 1
        HungFeed.most_at_once = max(HungFeed.most_at_once, HungFeed.in_flight)
        try:
            await asyncio.Event().wait()
        finally:
            HungFeed.in_flight -= 1


async def test_hung_price_feeds_are_waited_for_together_not_one_after_another(tmp_path):
    """A hung feed costs the snapshot one read deadline, however many feeds hang: the sheds
    after it do not wait a deadline per feed."""
    async with running_site([MinerBatch("luxos", 1, "site", "Antminer S21")], tmp_path, first_address="127.0.151.1",
                            budget_kw=10) as (_sim, daemon, _budget, _truth):
        controller = daemon.controller
        controller._feeds = {"hashprice": HungFeed("hashprice"), "power": HungFeed("power")}
        controller._rate_feeds = {"H100": HungFeed("gpu")}
        snapshot = await controller.observe()
        assert HungFeed.most_at_once == 3  # before: 1, each feed waited out in turn
        assert HungFeed.in_flight == 0  # every hung read was given up at its deadline
        assert snapshot.prices.hashprice_stale and snapshot.prices.power_stale  # nothing good held: stale
