"""The operator's state across a restart: saved before each change takes effect, durable across a
SIGKILL, read back and put in place before the first decision; commands left open are closed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from simsite import running_site

from wattshift.daemon.control.memory import Switched
from wattshift.daemon.control.sequencer import Action
from wattshift.daemon.journal.store import AsyncJournal, EntryKind, Journal, NewEntry
from wattshift.daemon.runtime.restore import (
    RESTARTED,
    close_open_commands,
    restore_operator_state,
)
from wattshift.daemon.runtime.site_state import SCHEMA_VERSION, SiteState, StateError, state_path
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.snapshot import DeviceClass
from wattshift.policies.overrides import Forced, Override, Overrides
from wattshift.simulators.site import MinerBatch

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return state_path(tmp_path / "state")


class FakeController:
    """What the restore needs of the controller: its budget, manual mode, recorder, memory."""

    def __init__(self, contract: float = 100_000.0) -> None:
        self.budget = BudgetSchedule(contract)
        self.paused = False
        self.mode_listener: Any = None
        self.events: list[tuple[str, dict[str, object]]] = []
        self.waking: set[str] = set()
        self.switch_listener: Any = None
        self.switches: dict[str, Switched] = {}
        self.recorder = self

    async def event(self, summary: str, data: dict[str, object]) -> None:
        self.events.append((summary, data))

    def assume_waking(self, device_ids: frozenset[str]) -> None:
        self.waking |= device_ids

    def restore_switches(self, saved: dict[str, Switched], now: datetime) -> tuple[list[str], list[str]]:
        """Every miner is in the site file; what is over an hour old is left out."""
        self.switches = {d: s for d, s in saved.items() if now - s.at < HOUR}
        return list(self.switches), [d for d in saved if d not in self.switches]


class Switcher:
    """A policy switcher: accepts (or refuses) and remembers each path."""

    def __init__(self, accepted: bool = True) -> None:
        self.accepted, self.paths = accepted, []

    async def __call__(self, path: Path) -> Any:
        self.paths.append(path)
        return type("Result", (), {"accepted": self.accepted})()


# -- the store ---------------------------------------------------------------------------------


def test_every_change_is_saved_and_read_back_after_a_reopen(path):
    budget, overrides = BudgetSchedule(100_000), Overrides()
    with SiteState(path) as state:
        budget.listener, overrides.listener = state, state
        budget.add(BudgetEvent("cut", 50_000, T0, T0 + HOUR))
        budget.add(BudgetEvent("standing", 80_000, T0, None, priority=3))
        budget.add(BudgetEvent("gone", 10_000, T0))
        assert budget.cancel("gone")
        overrides.set_device("10.0.0.7", Override(Forced.OFF, T0 + HOUR, by="alice"))
        overrides.set_device("10.0.0.8", Override(Forced.ON))
        overrides.set_device("10.0.0.8", None)  # back to auto
        overrides.set_class(DeviceClass.GPU, Override(Forced.ON))
        state.paused_saved(True)
        state.policy_saved(Path("/etc/wattshift/b.yaml"), Path("/etc/wattshift/a.yaml"))
    with SiteState(path) as state:
        saved = state.load()
    assert saved.events == (BudgetEvent("cut", 50_000, T0, T0 + HOUR), BudgetEvent("standing", 80_000, T0, None, 3))
    assert saved.overrides == {("device", "10.0.0.7"): Override(Forced.OFF, T0 + HOUR, "alice"),
                               ("class", "gpu"): Override(Forced.ON)}
    assert saved.paused is True
    assert (saved.policy.path, saved.policy.site_path) == ("/etc/wattshift/b.yaml", "/etc/wattshift/a.yaml")
    assert saved.problems == ()


def test_a_change_that_cannot_be_saved_is_not_made(path):
    budget, overrides = BudgetSchedule(100_000), Overrides()
    state = SiteState(path)
    budget.listener, overrides.listener = state, state
    budget.add(BudgetEvent("kept", 50_000, T0))
    state.close()  # the file is gone from under it: every write now fails
    with pytest.raises(StateError, match="saving budget event 'cut' failed"):
        budget.add(BudgetEvent("cut", 40_000, T0))
    with pytest.raises(StateError):
        budget.cancel("kept")
    with pytest.raises(StateError):
        overrides.set_device("10.0.0.7", Override(Forced.OFF))
    assert [e.name for e in budget.events()] == ["kept"]
    assert not overrides


def test_an_ended_event_leaves_the_file_and_a_failure_to_say_so_does_not_stop_the_tick(path):
    budget = BudgetSchedule(100_000)
    with SiteState(path) as state:
        budget.listener = state
        budget.add(BudgetEvent("short", 50_000, T0, T0 + HOUR))
        assert [e.name for e in budget.expire(T0 + 2 * HOUR)] == ["short"]
        assert state.load().events == ()
        budget.add(BudgetEvent("short2", 50_000, T0, T0 + HOUR))
    assert [e.name for e in budget.expire(T0 + 2 * HOUR)] == ["short2"]  # closed store: logged, not raised
    assert budget.events() == []


def test_a_saved_change_survives_a_sigkill_right_after_it(path):
    child = textwrap.dedent(f"""
        import os, signal
        from datetime import datetime, UTC
        from pathlib import Path
        from wattshift.model.budget import BudgetEvent, BudgetSchedule
        from wattshift.daemon.runtime.site_state import SiteState
        budget = BudgetSchedule(100_000)
        budget.listener = SiteState(Path({str(path)!r}))
        budget.add(BudgetEvent("cut", 50_000, datetime.now(UTC)))
        os.kill(os.getpid(), signal.SIGKILL)  # the instant the change is acknowledged
    """)
    done = subprocess.run([sys.executable, "-c", child], check=False, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with SiteState(path) as state:
        assert [e.name for e in state.load().events] == ["cut"]


def test_miners_switches_are_saved_one_transaction_a_batch_and_read_back_after_a_reopen(path):
    with SiteState(path) as state:
        commits: list[str] = []
        state._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        state.switches_saved({f"10.0.0.{i}": Switched(False, T0) for i in range(1, 201)})
        state.switches_saved({"10.0.0.1": Switched(True, T0 + HOUR)})  # a row per miner: replaced
        state.switches_saved({})  # nothing switched: nothing written
        assert len(commits) == 2
        state.switches_removed(["10.0.0.2", "10.0.0.3"])
    with SiteState(path) as state:
        saved = state.load().switches
    assert len(saved) == 198
    assert saved["10.0.0.1"] == Switched(True, T0 + HOUR) and saved["10.0.0.4"] == Switched(False, T0)
    assert "10.0.0.2" not in saved


def test_a_switch_saved_survives_a_sigkill_right_after_it(path):
    child = textwrap.dedent(f"""
        import os, signal
        from datetime import datetime, UTC
        from pathlib import Path
        from wattshift.daemon.control.memory import Switched
        from wattshift.daemon.runtime.site_state import SiteState
        SiteState(Path({str(path)!r})).switches_saved({{"10.0.0.7": Switched(False, datetime.now(UTC))}})
        os.kill(os.getpid(), signal.SIGKILL)  # the instant the stop is saved
    """)
    done = subprocess.run([sys.executable, "-c", child], check=False, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    with SiteState(path) as state:
        assert state.load().switches["10.0.0.7"].on is False


def test_a_state_file_of_schema_1_gains_the_switches_table_and_keeps_its_rows(path):
    with SiteState(path) as state:
        state.event_saved(BudgetEvent("cut", 50_000, T0))
    with sqlite3.connect(path) as conn:  # as the version before the switches wrote it
        conn.execute("DROP TABLE switches")
        conn.execute("PRAGMA user_version = 1")
    with SiteState(path) as state:
        state.switches_saved({"10.0.0.7": Switched(False, T0)})
        saved = state.load()
    assert [e.name for e in saved.events] == ["cut"] and saved.switches == {"10.0.0.7": Switched(False, T0)}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_an_unreadable_row_is_reported_and_the_rest_restored(path):
    with SiteState(path) as state:
        state.event_saved(BudgetEvent("good", 50_000, T0))
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO budget_events VALUES ('bad', 'lots', 0, NULL, 0)")
        conn.execute("INSERT INTO overrides VALUES ('device', 'x', 'sideways', NULL, 'op')")
        conn.execute("INSERT INTO settings VALUES ('manual_mode', '{\"paused\": \"yes\"}')")
        conn.execute("INSERT INTO switches VALUES ('10.0.0.9', 'off', 'yesterday')")
    with SiteState(path) as state:
        saved = state.load()
    assert [e.name for e in saved.events] == ["good"]
    assert saved.overrides == {} and saved.paused is False and saved.switches == {}
    assert len(saved.problems) == 4 and any("'bad'" in p for p in saved.problems)
    assert any("'10.0.0.9'" in p for p in saved.problems)


def test_another_database_is_refused(tmp_path):
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StateError, match="some other SQLite database"):
        SiteState(other)


# -- restore -----------------------------------------------------------------------------------


async def test_restore_puts_back_what_is_still_in_force_and_journals_it(path):
    with SiteState(path) as state:
        state.event_saved(BudgetEvent("cut", 50_000, T0, T0 + 2 * HOUR))
        state.event_saved(BudgetEvent("over", 40_000, T0 - 2 * HOUR, T0 - HOUR))
        state.override_saved("device", "10.0.0.7", Override(Forced.OFF))
        state.override_saved("device", "10.0.0.9", Override(Forced.ON, T0 - HOUR))
        state.override_saved("class", "gpu", Override(Forced.ON, T0 + 2 * HOUR))
        state.paused_saved(True)
    controller, overrides = FakeController(), Overrides()
    with SiteState(path) as state:
        await restore_operator_state(state, controller, overrides, switch_policy=None, site_policy=None,
                                     now=T0 + HOUR)
        # Restored before the first decision: the budget in force is the cut's, not the contract.
        assert controller.budget.in_force(T0 + HOUR) == 50_000
        assert [e.name for e in controller.budget.events()] == ["cut"]
        assert overrides.devices == {"10.0.0.7": Override(Forced.OFF)}
        assert overrides.classes == {DeviceClass.GPU: Override(Forced.ON, T0 + 2 * HOUR)}
        assert controller.paused is True
        (summary, data), = controller.events
        assert summary.startswith("restored after restart: budget event(s) cut; override(s) class gpu on,"
                                  " device 10.0.0.7 off; manual mode (actuation paused)")
        assert "budget event(s) ended while down: over" in summary
        assert "override of device 10.0.0.9 ended while down" in summary
        assert data["events"] == ["cut"] and data["paused"] is True
        # What ended while down is gone from the file too; what is in force stays.
        again = state.load()
        assert [e.name for e in again.events] == ["cut"]
        assert set(again.overrides) == {("device", "10.0.0.7"), ("class", "gpu")}
        # From now on each change is saved before it is made.
        controller.budget.cancel("cut")
        overrides.set_device("10.0.0.7", None)
        controller.mode_listener(False)
        after = state.load()
        assert after.events == () and ("device", "10.0.0.7") not in after.overrides and after.paused is False


async def test_restore_puts_back_the_miners_switches_and_drops_the_rest_from_the_file(path):
    now = T0 + HOUR
    with SiteState(path) as state:
        state.switches_saved({"stopped": Switched(False, now - timedelta(minutes=1)),
                              "long ago": Switched(False, now - 2 * HOUR)})
    controller = FakeController()
    with SiteState(path) as state:
        await restore_operator_state(state, controller, Overrides(), switch_policy=None, site_policy=None, now=now)
        assert controller.switches == {"stopped": Switched(False, now - timedelta(minutes=1))}
        assert set(state.load().switches) == {"stopped"}  # what the controller left out is gone
        (summary, data), = controller.events
        assert summary == "restored after restart: the last on/off change of 1 miner(s) (minimum up/down times)"
        assert data["switches"] == 1
        controller.switch_listener({"woken": Switched(True, now)})  # from now on each change is saved
        assert set(state.load().switches) == {"stopped", "woken"}


async def test_restoring_nothing_journals_nothing(path):
    controller = FakeController()
    with SiteState(path) as state:
        await restore_operator_state(state, controller, Overrides(), switch_policy=None, site_policy=None, now=T0)
    assert controller.events == []
    assert controller.budget.listener is not None  # still attached for what comes


@pytest.mark.parametrize(("saved_site", "accepted", "switched", "note"), [
    ("/site/a.yaml", True, True, None),
    ("/site/old.yaml", True, False, "the site file now names /site/a.yaml"),
    ("/site/a.yaml", False, True, "refused on restore"),
])
async def test_the_policy_switched_to_holds_while_the_site_file_names_the_same_one(
        path, saved_site, accepted, switched, note):
    with SiteState(path) as state:
        state.policy_saved(Path("/site/b.yaml"), Path(saved_site))
    controller, switch = FakeController(), Switcher(accepted)
    with SiteState(path) as state:
        await restore_operator_state(state, controller, Overrides(), switch_policy=switch,
                                     site_policy=Path("/site/a.yaml"), now=T0)
    assert switch.paths == ([Path("/site/b.yaml")] if switched else [])
    (summary, data), = controller.events
    assert data["policy"] == ("/site/b.yaml" if accepted and switched else None)
    if note:
        assert note in summary


# -- commands left open ------------------------------------------------------------------------


def _command(device: str, action: str) -> NewEntry:
    return NewEntry(EntryKind.COMMAND, f"shed: {device}: {action}", device, {"action": action})


def _result(device: str) -> NewEntry:
    return NewEntry(EntryKind.RESULT, f"{device}: ok", device, {"ok": True})


def test_open_commands_are_those_no_result_follows(tmp_path):
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.record_many([_command("a", "sleep"), _command("b", "sleep")])
        journal.record_many([_result("a")])
        journal.record(EntryKind.EVENT, "started: site s")
        start = journal.last_event_id("started")
        journal.record_many([_command("c", "wake"), _command("d", "set_limit")])
        journal.record_many([_result("d"), _result("b")])  # b's result comes late; c's never
        assert [c.device for c in journal.open_commands()] == ["c"]
        assert [c.device for c in journal.open_commands(after=0)] == ["c"]
        assert start == journal.last_event_id("started") and journal.last_event_id("nothing") == 0


async def test_a_restart_closes_what_the_last_run_left_open_and_wakes_count_as_waking(tmp_path):
    async with await AsyncJournal.open(tmp_path / "j.sqlite3") as journal:
        await journal.record_many([_command("old", "sleep")])  # before the last start: already closed
        await journal.record(EntryKind.RESULT, "old: unknown: daemon restarted", device="old")
        await journal.record(EntryKind.EVENT, "started: site s")
        await journal.record_many([_command("a", "sleep"), _command("b", "wake"), _command("c", "set_limit")])
        await journal.record_many([_result("c")])
        # ... SIGKILL: a's and b's results never come.
        controller = FakeController()
        assert await close_open_commands(journal, controller) == ["a", "b"]  # type: ignore[arg-type]
        assert controller.waking == {"b"}
        assert await journal.open_commands() == []
        results = {e.device: e for e in await journal.query(kind=EntryKind.RESULT) if RESTARTED in e.summary}
        commands = {e.device: e.id for e in await journal.query(kind=EntryKind.COMMAND)}
        assert {d: r.data["command_id"] for d, r in results.items() if d != "old"} == {"a": commands["a"],
                                                                                       "b": commands["b"]}
        assert results["a"].summary == f"a: sleep: {RESTARTED}" and results["a"].data["ok"] is False
        events = [e.summary for e in await journal.query(kind=EntryKind.EVENT)]
        assert events[-1].startswith("restart: 2 command(s) left open by the last run closed as unknown")
        # A second restart finds nothing more to close.
        await journal.record(EntryKind.EVENT, "started: site s")
        assert await close_open_commands(journal, FakeController()) == []  # type: ignore[arg-type]


# -- the controller's two hooks, on a simulated site -------------------------------------------


async def test_a_wake_left_open_counts_at_its_limit_and_manual_mode_is_saved_first(tmp_path):
    async with running_site([MinerBatch("luxos", 2, "site", "Antminer S21")], tmp_path, first_address="127.0.48.1",
                            budget_kw=10) as (sim, daemon, _, _):
        controller = daemon.controller
        for miner in sim.miners:
            miner.physics.sleep(settled=True)  # both asleep; the last run told the first one to wake
        woken, other = (m.host for m in sim.miners)
        controller.assume_waking(frozenset({woken, "not-a-device"}))
        snapshot = await controller.observe()
        assert snapshot.miner(woken).waking and snapshot.miner(woken).worst_case_watts >= 3000
        assert not snapshot.miner(other).waking and snapshot.miner(other).worst_case_watts < 500

        saved: list[bool] = []
        controller.mode_listener = saved.append
        controller.paused = True
        assert saved == [True] and controller.paused is True

        def full_disk(paused: bool) -> None:
            raise StateError("disk full")

        controller.mode_listener = full_disk
        with pytest.raises(StateError):
            controller.paused = False
        assert controller.paused is True  # not saved, not changed


MIN_DOWN = {"min_down_seconds": 600.0, "min_up_seconds": 0.0, "wear_usd_per_cycle": 0.0}


@pytest.mark.parametrize(("stopped_ago", "held"), [(60.0, True), (601.0, False)])
async def test_a_miner_stopped_before_the_crash_stays_down_through_its_minimum_down_time(
        path, tmp_path, stopped_ago, held):
    async with running_site([MinerBatch("luxos", 2, "site", "Antminer S21")], tmp_path / "site",
                            first_address="127.0.61.1", budget_kw=10, switching=MIN_DOWN) as (sim, daemon, _, _):
        controller = daemon.controller
        stopped, running = (m.host for m in sim.miners)
        sim.miner(stopped).physics.sleep(settled=True)  # as the last run left it
        now = datetime.now(UTC)
        with SiteState(path) as state:  # what the last run saved as the stop was carried out
            state.switches_saved({stopped: Switched(False, now - timedelta(seconds=stopped_ago)),
                                  running: Switched(True, now - HOUR), "gone": Switched(False, now)})
        with SiteState(path) as state:
            await restore_operator_state(state, controller, Overrides(), switch_policy=None, site_policy=None,
                                         now=now)
            writes: list[dict[str, Switched]] = []
            save = controller.switch_listener
            controller.switch_listener = lambda batch: (writes.append(dict(batch)), save(batch))
            report = await controller.run_once()
            woken = [r.step.device_id for r in report.results if r.ok and r.step.action is Action.WAKE]
            if held:  # within its minimum down time, by the clock of the run that stopped it
                assert woken == [] and writes == []
                since = report.snapshot.miner(stopped).state_since
                assert since is not None and abs(report.snapshot.clock - since - stopped_ago) < 30
                assert set(state.load().switches) == {stopped}  # the stale and the unknown left the file
            else:  # past it: the restart holds nothing back, and the wake is saved as it lands
                assert woken == [stopped]
                assert [list(w) for w in writes] == [[stopped]] and writes[0][stopped].on is True
                assert state.load().switches[stopped].on is True
                writes.clear()
                await controller.run_once()  # nothing switched: nothing written
                assert writes == []


async def test_a_policy_switch_is_saved_first_and_a_refused_one_leaves_the_running_file_saved(path, tmp_path):
    from wattshift.daemon.config.policy_file import load_policy_file
    from wattshift.daemon.runtime.controls import _saving_switcher
    from wattshift.daemon.runtime.policy_reload import PolicyReloader

    site_file, good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    site_file.write_text("policy: merit-order\n")
    good.write_text("policy: strike-price\noptions:\n  strike_usd_per_mwh: 20\n")
    bad.write_text("policy: strike-price\noptions:\n  strike_usd_per_mwh: 20\n  hysteresis_usd_per_mwh: -1\n")

    class Live:  # what the reloader drives
        policy = load_policy_file(site_file)
        recorder = FakeController()

        def request_replan(self, reason: str) -> None:
            pass

    reloader = PolicyReloader(Live(), site_file)
    with SiteState(path) as state:
        switch = _saving_switcher(reloader, state, site_file)
        assert (await switch(Path(good.name))).accepted
        assert state.load().policy.path == str(good)
        assert not (await switch(Path(bad.name))).accepted
        assert state.load().policy.path == str(good)  # what runs is what a restart puts back
        assert (state.load().policy.site_path, reloader.path) == (str(site_file), good)
