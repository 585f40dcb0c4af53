"""After a restart, before the first decision: close what the last run left open, and put back
what the operator had set (DESIGN.md invariant 6: "a restart resumes from the real state").

- Commands journaled but with no result (the daemon died sending them) get the result
  ``unknown: daemon restarted``. Nothing is assumed about what they did: the new run remembers
  nothing of the old one, and its first observe reads every device before the first decision.
  A device told to wake counts as waking (on, at its limit) until it is seen running, since a
  miner that got the wake may still be booting when it is read. It is not distrusted (sent
  nothing for a while) as after a failed command: a crash mid-shed leaves the shedding miners
  open, and a restarted daemon must be able to shed them at once.
- Budget events, maintenance overrides, manual mode and the policy file an operator switched to
  are read from the state file (:mod:`wattshift.daemon.runtime.site_state`) and put back; from then on
  every change is written there before it takes effect. An event or override already over is
  dropped, and the journal says so.
- Each miner's last on/off change (saved as the miners take the commands) is put back into the
  loop's memory on its clock, so a miner stopped a minute before the crash stays down through
  its minimum down time, and one started stays up through its minimum up time
  (``Controller.restore_switches``). Those of miners no longer in the site file, and those older
  than every minimum up and down time, are dropped from the file.

Each step journals one event that says what it found and did.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattshift.daemon.journal.entries import EntryKind, NewEntry
from wattshift.daemon.journal.store import AsyncJournal
from wattshift.model.snapshot import DeviceClass
from wattshift.policies.overrides import Overrides

from .site_state import SavedState, SiteState

if TYPE_CHECKING:
    from wattshift.daemon.control.controller import Controller

log = logging.getLogger(__name__)

STARTED = "started"  # how the event that opens a run's journal begins (wattshift.daemon.runtime.app)
RESTARTED = "unknown: daemon restarted"  # the result given to a command left open by a crash

# Switch to the policy file at a path; answers PolicyReloader.switch_policy's ReloadResult.
Switcher = Callable[[Path], Awaitable[Any]]


async def close_open_commands(journal: AsyncJournal, controller: Controller) -> list[str]:
    """Give each command the last run left open its result; a wake counts as waking. Call it
    before this run's own ``started`` event: each start closes everything before it, so only
    the last run's rows need reading. Returns the devices."""
    after = await journal.last_event_id(STARTED)
    commands = await journal.open_commands(after=after)
    if not commands:
        return []
    devices = [c.device for c in commands if c.device is not None]
    waking = frozenset(c.device for c in commands if c.device is not None and c.data.get("action") == "wake")
    entries = [
        NewEntry(EntryKind.RESULT, f"{c.summary.split(': ', 1)[-1]}: {RESTARTED}", c.device,
                 {"ok": False, "failure": "unknown", "command_id": c.id, "held_watts": None, "seconds": None})
        for c in commands
    ]
    entries.append(NewEntry(
        EntryKind.EVENT,
        f"restart: {len(commands)} command(s) left open by the last run closed as unknown;"
        " their devices are read before the first decision",
        data={"commands": [c.id for c in commands], "devices": devices, "waking": sorted(waking)},
    ))
    await journal.record_many(entries)  # one transaction: every open command closed, or none
    controller.assume_waking(waking)
    log.warning("restart: %d command(s) left open by the last run: %s", len(commands), ", ".join(devices))
    return devices


async def restore_operator_state(
    state: SiteState,
    controller: Controller,
    overrides: Overrides,
    *,
    switch_policy: Switcher | None,
    site_policy: Path | None,
    now: datetime,
) -> SavedState:
    """Put back what ``state`` holds, then attach it, so every later change is saved first."""
    saved = state.load()
    notes: list[str] = [f"unreadable: {p}" for p in saved.problems]
    restored: dict[str, Any] = {"events": [], "overrides": [], "paused": False, "policy": None, "switches": 0}

    ended = [e.name for e in saved.events if e.end is not None and e.end <= now]
    if ended:
        state.events_removed(ended)
        notes.append(f"budget event(s) ended while down: {', '.join(ended)}")
    for event in saved.events:
        if event.name in ended:
            continue
        try:
            controller.budget.add(event)
        except ValueError as err:
            notes.append(f"budget event {event.name}: {err}")
            continue
        restored["events"].append(event.name)

    for (scope, target), override in saved.overrides.items():
        gone = not override.active(now)
        if gone:
            state.override_saved(scope, target, None)
            notes.append(f"override of {scope} {target} ended while down")
            continue
        if scope == "device":
            overrides.set_device(target, override)
        else:
            try:
                overrides.set_class(DeviceClass(target), override)
            except ValueError:
                notes.append(f"override of class {target!r}: no such class")
                continue
        restored["overrides"].append(f"{scope} {target} {override.state.value}")

    if saved.paused:
        controller.paused = True
        restored["paused"] = True

    switched, dropped = controller.restore_switches(saved.switches, now)
    if dropped:
        state.switches_removed(dropped)
    restored["switches"] = len(switched)

    # Attached before anything that can fail or wait: no change from here on goes unsaved.
    controller.budget.listener = state
    overrides.listener = state
    controller.mode_listener = state.paused_saved
    controller.switch_listener = state.switches_saved

    if saved.policy is not None:
        restored["policy"] = await _restore_policy(saved, switch_policy, site_policy, notes)
    await _journal(controller, restored, notes)
    return saved


async def _restore_policy(saved: SavedState, switch: Switcher | None, site_policy: Path | None,
                          notes: list[str]) -> str | None:
    assert saved.policy is not None
    if switch is None or site_policy is None:
        notes.append(f"policy file {saved.policy.path}: the site file names no policy_file now; not restored")
        return None
    if saved.policy.site_path != str(site_policy):
        notes.append(f"policy file {saved.policy.path}: the site file now names {site_policy}; that one runs")
        return None
    if Path(saved.policy.path) == site_policy:
        return None
    result = await switch(Path(saved.policy.path))
    if not getattr(result, "accepted", False):
        notes.append(f"policy file {saved.policy.path}: refused on restore; {site_policy} runs")
        return None
    return saved.policy.path


async def _journal(controller: Controller, restored: dict[str, Any], notes: list[str]) -> None:
    parts = []
    if restored["events"]:
        parts.append(f"budget event(s) {', '.join(restored['events'])}")
    if restored["overrides"]:
        parts.append(f"override(s) {', '.join(restored['overrides'])}")
    if restored["paused"]:
        parts.append("manual mode (actuation paused)")
    if restored["policy"]:
        parts.append(f"policy file {restored['policy']}")
    if restored["switches"]:
        parts.append(f"the last on/off change of {restored['switches']} miner(s) (minimum up/down times)")
    if not parts and not notes:
        return
    summary = f"restored after restart: {'; '.join(parts) or 'nothing'}"
    if notes:
        summary += f" ({'; '.join(notes)})"
    log.warning("%s", summary)
    await controller.recorder.event(summary, {**restored, "notes": notes})
