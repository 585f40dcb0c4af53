"""A cut survives a crash: the real ``wattshift run`` in its own process, on a simulated site and a
real Mosquitto, is SIGKILLed at several moments of a budget cut and restarted at once.

Judged by the simulators' true draw: once the restarted daemon has had time to react, the site
stays under the cut; and the journal accounts for every command (each has a result, those left
open by the kill closed as unknown). Miners on 127.0.47.x, the broker on 127.0.46.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from mosquitto import Broker, free_port
from mqtt_harness import PREFIX, operator

from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.journal.store import (
    Journal,
    JournalEntry,
    JournalError,
    journal_path,
)
from wattshift.daemon.runtime.restore import RESTARTED
from wattshift.simulators.miner import Fault, SimulatedMiner
from wattshift.simulators.site import MinerBatch, SimulatedSite, TruthMonitor

CONTRACT_KW, CUT_KW = 15.0, 7.0  # four S21 at 3.5 kW: 14 kW running, so the cut must shed half
# From the restarted daemon's first decision: a tick to plan and send the sheds, the ramp down
# (3.5 kW at 2 kW/s), and room for a loaded CI machine. The bug this guards against lasts as
# long as the cut does (the restarted daemon plans for the contract and grants the power back).
REACTION_S = 5.0
JUDGED_S = 3.0  # how long the site is watched after that


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker", "127.0.46.1") as running:
        yield running


def write_site(tmp_path: Path, sim: SimulatedSite, broker: Broker, switching: dict[str, float] | None = None,
               **extra: Any) -> Path:
    if "policy_file" not in extra:
        extra["policy"] = {"name": "merit-order", "options": {"min_dwell_seconds": 0}}
    site = sim.site_file(
        **extra, name="test", budget_kw=CONTRACT_KW, tick_seconds=1,
        prices={"power_usd_per_mwh": {"source": "fixed", "value": 40}},
        drivers={"call_timeout_seconds": 1.0, "confirm_timeout_seconds": 6.0},
        state_dir=str(tmp_path / "state"),
        metrics_listen=f"127.0.0.1:{free_port('127.0.0.1')}",
        mqtt={"host": broker.host, "port": broker.port, "publish_min_interval_seconds": 0.1,
              "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5, "keepalive": 5},
    )
    for group in site["miners"]:
        group["switching"] = switching or {}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


class Daemon:
    """``wattshift run --config site.yaml`` as a service manager runs it: its own process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wattshift.daemon.cli", "run", "--config", str(self.config),
                stdout=out, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)  # no clean-up, no last journal row: a crash
        await self.proc.wait()

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await self.proc.wait()
        return self.proc.returncode or 0


class Journaled:
    """The daemon's journal as an operator reads it, while the daemon writes (WAL readers)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self, kind: EntryKind | None = None) -> list[JournalEntry]:
        try:
            with Journal(self.path, read_only=True) as journal:
                return journal.query(kind=kind, limit=100_000)
        except JournalError:  # not there yet, or the daemon is creating it
            return []

    def open_commands(self) -> list[JournalEntry]:
        with Journal(self.path, read_only=True) as journal:
            return journal.open_commands()

    async def wait_for(self, predicate: Callable[[list[JournalEntry]], Any], timeout: float = 30.0,
                       poll: float = 0.01) -> Any:
        async with asyncio.timeout(timeout):
            while not (found := predicate(self.entries())):
                await asyncio.sleep(poll)
        return found


def last_start(entries: list[JournalEntry]) -> int:
    return max(e.id for e in entries if e.kind is EntryKind.EVENT and e.summary.startswith("started"))


def first_decision_after(entries: list[JournalEntry], after: int) -> JournalEntry | None:
    return next((e for e in entries if e.id > after and e.kind is EntryKind.DECISION and e.device is None), None)


def hang_after_first_command(sim: SimulatedSite) -> list[SimulatedMiner]:
    """The first miner to carry out a command stops answering right after it, so the daemon's
    read-back hangs and that command is still open (journaled, no result) when the daemon dies."""
    hung: list[SimulatedMiner] = []
    for miner in sim.miners:
        def control(action: Any, miner: SimulatedMiner = miner, carry_out: Any = miner.control) -> Any:
            done = carry_out(action)
            if not hung:
                hung.append(miner)
                miner.set_fault(Fault.HANG)
            return done
        miner.control = control  # type: ignore[method-assign]
    return hung


@contextlib.asynccontextmanager
async def crash_site(
    tmp_path: Path, broker: Broker, **site: Any
) -> AsyncIterator[tuple[SimulatedSite, Daemon, Journaled]]:
    batches = [MinerBatch("luxos", 4, "site", "Antminer S21")]
    async with SimulatedSite(batches, first_address="127.0.47.1", physics_options={"ramp_watts_per_s": 2000.0}) as sim:
        daemon = Daemon(write_site(tmp_path, sim, broker, **site), tmp_path / "daemon.log")
        try:
            yield sim, daemon, Journaled(journal_path(tmp_path / "state"))
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                daemon.proc.kill()
                await daemon.proc.wait()


@pytest.mark.parametrize("moment", ["acknowledged", "shedding", "shed"])
async def test_a_cut_holds_across_a_sigkill_and_every_command_is_accounted_for(tmp_path, broker, moment):
    async with crash_site(tmp_path, broker) as (sim, daemon, journal):
        await daemon.start()
        await journal.wait_for(lambda es: any(e.kind is EntryKind.DECISION for e in es) and not journal.open_commands())
        assert sim.true_watts() > CUT_KW * 1000 + 3000, "the site should run well above the cut to come"

        judged_from = [float("inf")]  # the truth is judged against the cut from then on
        truth = TruthMonitor(sim, {"site": None},
                             lambda: {"site": CUT_KW * 1000} if time.monotonic() >= judged_from[0] else {},
                             interval=0.02)
        hung = hang_after_first_command(sim) if moment == "shedding" else []
        async with truth, operator(broker) as op:
            cut_at = max(e.id for e in journal.entries())
            await op.send({"command": "budget", "id": "cut", "name": "cut", "limit_kw": CUT_KW,
                           "duration_seconds": 600})
            assert (await op.wait_for(f"{PREFIX}/reply/cut"))["status"] == "accepted"
            if moment == "shedding":  # a shed journaled and carried out, its result not yet back
                await journal.wait_for(lambda es: hung and journal.open_commands())
            elif moment == "shed":
                await op.wait_for(f"{PREFIX}/reply/cut", lambda b: b["status"] == "reached", timeout=20)
            await daemon.kill()
            left_open = journal.open_commands()
            if moment == "shedding":
                assert hung[0].host in {c.device for c in left_open}
                hung[0].set_fault(Fault.NONE)  # it answers again by the time the daemon is back

            await daemon.start()  # at once, as systemd's Restart= would
            entries = await journal.wait_for(
                lambda es: es if first_decision_after(es, last_start(es)) is not None and last_start(es) > cut_at
                else None)
            first = first_decision_after(entries, last_start(entries))
            assert first is not None
            # The restarted daemon's very first decision plans for the cut, not for the contract.
            assert first.data["budget_watts"] == CUT_KW * 1000
            judged_from[0] = time.monotonic() + REACTION_S
            await asyncio.sleep(REACTION_S + JUDGED_S)
            assert sim.true_watts() <= CUT_KW * 1000
        assert await daemon.stop() == 0

    assert truth.samples > 100, "the monitor did not run"
    assert truth.excursions == [], f"over the cut after the restarted daemon reacted: {truth.excursions[:3]}"
    entries = journal.entries()
    restored = [e for e in entries if e.kind is EntryKind.EVENT and e.summary.startswith("restored after restart")]
    assert [e.data["events"] for e in restored] == [["cut"]]
    # Every command has its result; those the kill left open were closed as unknown on restart.
    assert journal.open_commands() == []
    closing = {e.data["command_id"]: e for e in entries if e.kind is EntryKind.RESULT and RESTARTED in e.summary}
    assert sorted(closing) == sorted(c.id for c in left_open)
    assert all(closing[c.id].device == c.device for c in left_open)


MERIT = "policy: merit-order\noptions:\n  min_dwell_seconds: 0\n"
STRIKE = "policy: strike-price\noptions:\n  strike_usd_per_mwh: 100\n  curtail_after_minutes: 0\n"


async def test_overrides_manual_mode_and_the_policy_switched_to_survive_a_sigkill(tmp_path, broker):
    (tmp_path / "merit.yaml").write_text(MERIT)
    (tmp_path / "strike.yaml").write_text(STRIKE)
    async with crash_site(tmp_path, broker, policy_file="merit.yaml") as (sim, daemon, journal):
        await daemon.start()
        await journal.wait_for(lambda es: any(e.kind is EntryKind.DECISION for e in es))
        held = sim.miners[0].host
        async with operator(broker) as op:
            for command in ({"command": "force", "id": "f", "device": held, "state": "off"},
                            {"command": "policy", "id": "p", "path": "strike.yaml"},
                            {"command": "pause", "id": "m"}):
                await op.send(command)
                assert (await op.wait_for(f"{PREFIX}/reply/{command['id']}"))["status"] == "accepted"
                if command["command"] == "force":  # held off for real before manual mode begins
                    async with asyncio.timeout(20):
                        while sim.miner(held).true_watts() >= 500:
                            await asyncio.sleep(0.2)
        await daemon.kill()  # at once: what was acknowledged must already be on disk
        before = max(e.id for e in journal.entries())

        await daemon.start()
        entries = await journal.wait_for(
            lambda es: es if last_start(es) > before and first_decision_after(es, last_start(es)) else None)
        started = last_start(entries)
        restored = [e for e in entries if e.id > before and e.summary.startswith("restored after restart")]
        assert len(restored) == 1
        assert restored[0].data["overrides"] == [f"device {held} off"]
        assert restored[0].data["paused"] is True
        assert restored[0].data["policy"] == str(tmp_path / "strike.yaml")
        first = first_decision_after(entries, started)
        assert first is not None and first.data["dry_run"] is True  # still paused: nothing is sent
        assert any(e.id > before and "strike-price" in e.summary and "restored after restart" in e.summary
                   for e in entries)
        await asyncio.sleep(2)  # a few more ticks
        assert not [e for e in journal.entries() if e.id > started and e.kind is EntryKind.COMMAND]
        assert sim.miner(held).true_watts() < 500  # still off

        async with operator(broker) as op:  # back to auto: the override still holds the miner off
            await op.send({"command": "resume", "id": "r"})
            assert (await op.wait_for(f"{PREFIX}/reply/r"))["status"] == "accepted"
        await asyncio.sleep(3)
        assert sim.miner(held).true_watts() < 500
        assert all(m.true_watts() > 1000 for m in sim.miners[1:])  # the others were woken
        assert await daemon.stop() == 0
    commands = [e for e in journal.entries() if e.id > started and e.kind is EntryKind.COMMAND]
    assert held not in {e.device for e in commands}
    assert journal.open_commands() == []


MIN_DOWN_S = 30.0  # long enough for the restarted daemon to decide within it on a loaded machine


def stops_carried_out(entries: list[JournalEntry]) -> dict[str, JournalEntry]:
    """Each miner's last stop that it took: the result of a sleep command, ok."""
    pending: dict[str, JournalEntry] = {}
    stops: dict[str, JournalEntry] = {}
    for e in entries:
        if e.kind is EntryKind.COMMAND and e.device is not None:
            pending[e.device] = e
        elif e.kind is EntryKind.RESULT and e.device in pending and e.data.get("ok"):
            if pending.pop(e.device).data["action"] == "sleep":
                stops[e.device] = e
    return stops


def wakes_after(entries: list[JournalEntry], after: int, devices: Collection[str]) -> list[JournalEntry]:
    return [e for e in entries if e.id > after and e.kind is EntryKind.COMMAND and e.data["action"] == "wake"
            and e.device in devices]


async def test_a_miner_stopped_just_before_a_sigkill_stays_down_through_its_minimum_down_time(tmp_path, broker):
    switching = {"min_down_seconds": MIN_DOWN_S, "min_up_seconds": 0.0, "wear_usd_per_cycle": 0.0}
    async with crash_site(tmp_path, broker, switching=switching) as (_, daemon, journal):
        await daemon.start()
        await journal.wait_for(lambda es: any(e.kind is EntryKind.DECISION for e in es) and not journal.open_commands())
        async with operator(broker) as op:
            await op.send({"command": "budget", "id": "cut", "name": "cut", "limit_kw": CUT_KW})
            assert (await op.wait_for(f"{PREFIX}/reply/cut"))["status"] == "accepted"
            await journal.wait_for(lambda es: stops_carried_out(es), poll=0.005)
            await daemon.kill()  # the instant a stop is carried out
            stops = stops_carried_out(journal.entries())
            before = max(e.id for e in journal.entries())

            await daemon.start()
            await journal.wait_for(lambda es: last_start(es) > before and first_decision_after(es, last_start(es)))
            await op.send({"command": "restore", "id": "end", "name": "cut"})  # room for every miner again
            assert (await op.wait_for(f"{PREFIX}/reply/end"))["status"] == "accepted"
            ended = max(e.id for e in journal.entries())
            # Once the minimum down time of every stop is over, the restarted daemon wakes them.
            await journal.wait_for(lambda es: {e.device for e in wakes_after(es, ended, stops)} == set(stops),
                                   timeout=MIN_DOWN_S + 30)
        assert await daemon.stop() == 0

    entries = journal.entries()
    held_until = max(stop.at for stop in stops.values()) + timedelta(seconds=MIN_DOWN_S)
    decided = [e for e in entries if e.id > ended and e.kind is EntryKind.DECISION and e.device is None]
    assert any(e.at < held_until - timedelta(seconds=2) for e in decided), \
        "the restarted daemon made no decision within the minimum down time: the test proves nothing"
    for wake in wakes_after(entries, ended, stops):  # none woken before its stop's minimum down time was over
        assert wake.at >= stops[wake.device].at + timedelta(seconds=MIN_DOWN_S), (wake.device, wake.at)
    restored = [e for e in entries if e.id > before and e.summary.startswith("restored after restart")]
    assert len(restored) == 1 and restored[0].data["switches"] >= len(stops)
