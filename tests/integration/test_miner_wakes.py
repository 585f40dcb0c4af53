"""Miners slept by a cut come back when it ends, through the controller, the real pyasic
drivers and the firmware simulators, judged by the simulators' true state (issue 11, items 1,
2 and 5): on/off miners are woken with resume alone, firmware that takes watts is driven in
watts whatever the model table says, and hashboards that boot for a while are counted at their
worst case meanwhile, never called ``ignored``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from simsite import assert_never_over, running_site

from wattshift.daemon.cli.summary import plan_table
from wattshift.daemon.control.sequencer import Action
from wattshift.daemon.journal.entries import EntryKind
from wattshift.model.budget import BudgetEvent
from wattshift.model.miner import CapabilitySource, Failure, PowerControl
from wattshift.simulators.miner import Fault
from wattshift.simulators.site import MinerBatch

BOOT_S = 3.0
SLOW = {"wake_boot_s": BOOT_S}
SITE = [
    # Older Braiins OS+ (no constraints API) on a model missing from the table: on/off.
    MinerBatch("braiins", 1, "site", "Antminer S19 Pro", physics=SLOW, settings={"reports_constraints": False}),
    # A Whatsminer without power limiting: on/off.
    MinerBatch("whatsminer", 1, "site", "Whatsminer M30S+", physics=SLOW, settings={"power_limit_supported": False}),
    # The same models on firmware that reports its range: watts, though the table lacks them.
    MinerBatch("braiins", 1, "site", "Antminer S19 Pro", physics=SLOW),
    MinerBatch("whatsminer", 1, "site", "Whatsminer M30S+", physics=SLOW),
    MinerBatch("luxos", 1, "site", "Antminer S21", physics=SLOW),
]


@pytest.mark.filterwarnings("ignore:passing settings to md5_crypt.hash\\(\\) is deprecated:DeprecationWarning")
async def test_miners_slept_by_a_cut_are_woken_when_it_ends(tmp_path):
    async with running_site(SITE, tmp_path, first_address="127.0.40.1", budget_kw=20) as (sim, daemon, budget, truth):
        controller, fleet = daemon.controller, daemon.fleet
        on_off = [m.host for m in sim.miners[:2]]
        capabilities = {m.host: fleet.capability(m.host) for m in sim.miners}
        assert [capabilities[h].control for h in on_off] == [PowerControl.ON_OFF] * 2
        for miner in sim.miners[2:4]:
            capability = capabilities[miner.host]
            assert (capability.control, capability.source) == (PowerControl.WATTS, CapabilitySource.FIRMWARE)

        # Announced 5 s ahead (the sheds ramp down at 2 kW/s), over 3 s later.
        start = datetime.now(UTC) + timedelta(seconds=5)
        end = start + timedelta(seconds=3)
        budget.add(BudgetEvent("cut", 1_000, start, end))
        for _ in range(2):
            await controller.run_once()
        assert all(m.physics.sleeping for m in sim.miners), "a 1 kW cut sleeps every miner"
        # Where each range came from shows in the journal, the metrics and the plan.
        decisions = await daemon.journal.query(kind=EntryKind.DECISION)
        sources = {e.device: e.data.get("capability_source") for e in decisions if e.device}
        assert [sources[h] for h in on_off] == ["reading", "reading"]
        assert [sources[m.host] for m in sim.miners[2:]] == ["firmware"] * 3
        registry = daemon.metrics.registry
        labels = {"device": on_off[0], "control": "on_off", "source": "reading"}
        assert registry.get_sample_value("wattshift_miner_control_info", labels) == 1
        labels = {"device": sim.miners[2].host, "control": "watts", "source": "firmware"}
        assert registry.get_sample_value("wattshift_miner_control_info", labels) == 1
        last = controller.last_report
        assert last is not None
        table = plan_table(last.snapshot, last.allocation)
        assert "watts 1500-3600 W (firmware)" in table and "on/off at 3400 W (reading)" in table

        await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 0.2)
        report = await controller.run_once()  # the cut is over: everything wakes
        wakes = [r for r in report.results if r.step.action is Action.WAKE]
        assert {r.step.device_id for r in wakes} == {m.host for m in sim.miners}
        assert all(r.ok for r in wakes), [(r.step.device_id, r.failure, r.detail) for r in wakes]
        for host in on_off:
            assert "SetPowerTarget" not in sim.miner(host).commands_received
            assert "adjust_power_limit" not in sim.miner(host).commands_received

        # Booting: the firmware runs, the boards hash nothing yet; counted at their worst case.
        booting = await controller.run_once()
        states = {m.device_id: m for m in booting.snapshot.miners}
        for miner in sim.miners[:4]:
            assert miner.physics.booting
            state = states[miner.host]
            assert state.failure is None, state.failure
            assert state.is_on and not state.reads_on
            # At the setting it comes up at (an on/off miner's one setting), not its boot draw.
            assert state.worst_case_watts == pytest.approx(state.limit_watts, abs=1.0)
            if miner.host in on_off:
                assert state.limit_watts == capabilities[miner.host].max_watts
            assert state.worst_case_watts > 10 * miner.physics.power_watts()

        async with asyncio.timeout(30):
            while not all(m.physics.hashrate_ths() > 0 and not m.physics.booting for m in sim.miners):
                await asyncio.sleep(0.2)
        for _ in range(2):
            report = await controller.run_once()
        assert not report.failures, [(r.step.device_id, r.failure, r.detail) for r in report.failures]
        # The truth: every miner mines again, the on/off ones at their one setting.
        for host in on_off:
            miner = sim.miner(host)
            assert miner.physics.mining and miner.physics.hashrate_ths() > 0
        results = await daemon.journal.query(kind=EntryKind.RESULT)
        assert not [e for e in results if e.data.get("failure") == "ignored"]
    assert_never_over(truth)


async def test_a_slow_shed_is_obeying_not_ignored(tmp_path):
    # An S19 XP whose draw falls at 400 W/s: still over a kilowatt seconds after it paused.
    batches = [
        MinerBatch("braiins", 1, "site", "Antminer S19 XP", physics={"ramp_watts_per_s": 400.0}),
        MinerBatch("luxos", 1, "site", "Antminer S21"),
    ]
    async with running_site(batches, tmp_path, first_address="127.0.41.1",
                            budget_kw=20) as (sim, daemon, budget, truth):
        slow = sim.miners[0]
        start = datetime.now(UTC) + timedelta(seconds=12)  # announced: 7.5 s of ramp fit before it
        budget.add(BudgetEvent("cut", 100, start, start + timedelta(seconds=30)))
        report = await daemon.controller.run_once()
        [sleep] = [r for r in report.results if r.step.device_id == slow.host]
        assert sleep.step.action is Action.SLEEP
        assert sleep.ok, sleep.detail  # before: ignored, and distrusted for 60 s
        after = await daemon.controller.run_once()
        state = next(m for m in after.snapshot.miners if m.device_id == slow.host)
        assert state.failure is None and not state.is_on
        assert state.worst_case_watts == pytest.approx(state.measured_watts)  # counted at its draw
        async with asyncio.timeout(15):
            while slow.true_watts() > slow.spec.sleep_watts:
                await asyncio.sleep(0.2)
    assert_never_over(truth)


async def test_a_wake_the_miner_ignored_is_not_counted_as_booting(tmp_path):
    batches = [MinerBatch("luxos", 2, "site", "Antminer S21")]
    async with running_site(batches, tmp_path, first_address="127.0.42.1",
                            budget_kw=20) as (sim, daemon, _budget, truth):
        ignoring, obeying = sim.miners
        for miner in sim.miners:
            miner.physics.sleep(settled=True)
        ignoring.set_fault(Fault.IGNORE)
        report = await daemon.controller.run_once()
        outcomes = {r.step.device_id: (r.step.action, r.failure) for r in report.results}
        assert outcomes == {ignoring.host: (Action.WAKE, Failure.IGNORED), obeying.host: (Action.WAKE, None)}
        states = {m.device_id: m for m in (await daemon.controller.run_once()).snapshot.miners}
        # It answered and stayed asleep: not booting (so, once trusted again, it reads asleep
        # and is woken again), and counted at its worst while distrusted.
        assert states[ignoring.host].waking is False
        assert states[ignoring.host].worst_case_watts == states[ignoring.host].max_watts
        assert obeying.physics.mining
    assert_never_over(truth)


async def test_a_miner_slept_by_a_cut_is_not_woken_inside_its_minimum_down_time(tmp_path):
    # Issue 15: the site file gives the S21s a 6 s minimum down time; a 1 s cut sleeps them, and
    # when it ends they stay asleep until 6 s after each stop, then are woken.
    down = 6.0
    batches = [MinerBatch("luxos", 2, "site", "Antminer S21")]
    async with running_site(batches, tmp_path, first_address="127.0.43.1", budget_kw=20,
                            switching={"min_down_seconds": down, "min_up_seconds": 0, "wear_usd_per_cycle": 0}
                            ) as (sim, daemon, budget, truth):
        controller = daemon.controller
        await controller.run_once()
        assert all(m.physics.mining for m in sim.miners)
        start = datetime.now(UTC) + timedelta(seconds=2)
        budget.add(BudgetEvent("cut", 100, start, start + timedelta(seconds=1)))
        report = await controller.run_once()  # announced: the sheds go now
        assert {r.step.device_id for r in report.results if r.step.action is Action.SLEEP} == {
            m.host for m in sim.miners}
        stopped = asyncio.get_running_loop().time()
        await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 1.5)  # the cut is over
        held = await controller.run_once()
        assert [r for r in held.results if r.step.action is Action.WAKE] == []
        # The policy keeps them off itself (had it not, the sequencer would have held the wakes).
        assert all("holding off (dwell time)" in held.allocation[m.host].reason for m in sim.miners)
        assert all(m.physics.sleeping for m in sim.miners)
        await asyncio.sleep(max(0.0, stopped + down + 0.5 - asyncio.get_running_loop().time()))
        woken = await controller.run_once()
        wakes = {r.step.device_id for r in woken.results if r.step.action is Action.WAKE}
        assert wakes == {m.host for m in sim.miners}
    assert_never_over(truth)
