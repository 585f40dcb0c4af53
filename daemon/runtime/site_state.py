"""What must survive a crash (DESIGN.md, "State that matters survives a crash"): what the operator
set (budget events, maintenance overrides, manual mode, the policy file in force), and when each
miner was last switched on or off (its minimum up and down times).

They live in memory while the daemon runs; every change is also written here, in a SQLite file
beside the journal (``state.sqlite3`` in the state directory; WAL, ``synchronous=FULL``, one
transaction per change), *before* the change takes effect, so before the command that made it
is answered. After a crash the restarted daemon reads it back before its first decision
(:mod:`wattshift.daemon.runtime.restore`).

The store is synchronous and is used from the event loop. Changes come from operators' commands
(a few a day, one small commit each) and must be on disk before the synchronous setters of
:class:`~wattshift.model.budget.BudgetSchedule` and :class:`~wattshift.policies.overrides.Overrides`
return; a write handed to another thread could not promise that. A write that fails raises
:class:`StateError` before the change is made in memory, so the command is refused, not lost.

A miner's last on/off change is written after the miner took the command (the loop's own
memory changes only then), one transaction for all the miners a batch of commands switched,
and nothing on a tick that switches none: a row per miner (upserted), never a row per tick. At
ten thousand miners a whole-fleet switch is one commit of ten thousand small rows: 60-80 ms on
a loaded two-core machine, beside 0.8-0.9 s for the journal's rows of the same commands
(``benchmarks/site_state_writes.py``), and after the commands are out. A failed write is
logged and the loop goes on: the miners have switched already.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from wattshift.daemon.control.memory import Switched
from wattshift.daemon.journal.entries import from_microseconds, to_microseconds
from wattshift.daemon.journal.store import BUSY_TIMEOUT_S, SchemaError, create_private, prepare_durable, transaction
from wattshift.model.budget import BudgetEvent
from wattshift.policies.overrides import Forced, Override

STATE_FILE_NAME = "state.sqlite3"
SCHEMA_VERSION = 2  # 2: the switches table (version 1 files get it on open)
MANUAL_MODE = "manual_mode"  # settings key: {"paused": bool}
POLICY = "policy"  # settings key: {"path": str, "site_path": str | None}
SCOPES = ("device", "class")  # what an override is keyed by

_SWITCHES = """CREATE TABLE switches (
    device_id TEXT PRIMARY KEY,  -- a miner of the site file
    way TEXT NOT NULL CHECK (way IN ('on', 'off')),  -- its last on/off change that the loop commanded
    at_us INTEGER NOT NULL  -- when it was carried out, microseconds since 1970-01-01 UTC
)"""
_SCHEMA = (
    """CREATE TABLE budget_events (
    name TEXT PRIMARY KEY,
    limit_watts REAL NOT NULL,
    start_us INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC, as in the journal
    end_us INTEGER,  -- NULL: until cancelled
    priority INTEGER NOT NULL
)""",
    """CREATE TABLE overrides (
    scope TEXT NOT NULL CHECK (scope IN ('device', 'class')),
    target TEXT NOT NULL,  -- a device id, or a device class
    state TEXT NOT NULL,
    until_us INTEGER,  -- NULL: until set back to auto
    set_by TEXT NOT NULL,
    PRIMARY KEY (scope, target)
)""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)  -- value: JSON",
    _SWITCHES,
)


class StateError(Exception):
    """The state file cannot be opened, read or written."""


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE_NAME


@dataclass(frozen=True)
class SavedPolicy:
    """The policy file an operator switched to, and the one the site file named at the time:
    the switch holds across a restart only while the site file still names the same one."""

    path: str
    site_path: str | None


@dataclass(frozen=True)
class SavedState:
    events: tuple[BudgetEvent, ...] = ()
    overrides: dict[tuple[str, str], Override] = field(default_factory=dict)  # (scope, target) -> override
    paused: bool = False
    policy: SavedPolicy | None = None
    switches: dict[str, Switched] = field(default_factory=dict)  # miner -> its last on/off change
    problems: tuple[str, ...] = ()  # rows that could not be read back, each with its reason


class SiteState:
    """The state file. Implements the listeners of BudgetSchedule and Overrides."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            create_private(path)
            # isolation_level=None: no implicit transactions; transaction() says where each starts.
            self._conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state {path}: cannot open: {exc}") from exc
        try:
            self._prepare()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StateError(f"state {path}: cannot be read: {exc}") from exc
            raise

    def _prepare(self) -> None:
        try:
            prepare_durable(self._conn, f"state {self.path}", _SCHEMA, SCHEMA_VERSION)
        except SchemaError as err:
            raise StateError(str(err)) from None
        with transaction(self._conn):
            if self._conn.execute("PRAGMA user_version").fetchone()[0] == 1:  # under the lock: once
                self._conn.execute(_SWITCHES)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- writes: one transaction each ------------------------------------------------------------

    def event_saved(self, event: BudgetEvent) -> None:
        self._write(
            "INSERT OR REPLACE INTO budget_events (name, limit_watts, start_us, end_us, priority)"
            " VALUES (?, ?, ?, ?, ?)",
            (event.name, event.limit_watts, to_microseconds(event.start, "start"),
             None if event.end is None else to_microseconds(event.end, "end"), event.priority),
            f"budget event {event.name!r}",
        )

    def events_removed(self, names: list[str]) -> None:
        for name in names:
            self._write("DELETE FROM budget_events WHERE name = ?", (name,), f"budget event {name!r}")

    def override_saved(self, scope: str, target: str, override: Override | None) -> None:
        if scope not in SCOPES:
            raise ValueError(f"override scope {scope!r}: must be one of {SCOPES}")
        if override is None:
            self._write("DELETE FROM overrides WHERE scope = ? AND target = ?", (scope, target),
                        f"override of {scope} {target!r}")
            return
        until = None if override.until is None else to_microseconds(override.until, "until")
        self._write(
            "INSERT OR REPLACE INTO overrides (scope, target, state, until_us, set_by) VALUES (?, ?, ?, ?, ?)",
            (scope, target, override.state.value, until, override.by), f"override of {scope} {target!r}",
        )

    def paused_saved(self, paused: bool) -> None:
        self._setting(MANUAL_MODE, {"paused": paused})

    def policy_saved(self, path: Path, site_path: Path | None) -> None:
        self._setting(POLICY, {"path": str(path), "site_path": None if site_path is None else str(site_path)})

    def switches_saved(self, switches: Mapping[str, Switched]) -> None:
        """Miners' last on/off changes: one transaction for the whole batch."""
        stamps = {at: to_microseconds(at, "at") for at in {s.at for s in switches.values()}}  # a batch: one or two
        rows = [(d, "on" if s.on else "off", stamps[s.at]) for d, s in switches.items()]
        self._write_many("INSERT OR REPLACE INTO switches (device_id, way, at_us) VALUES (?, ?, ?)", rows,
                         f"on/off changes of {len(rows)} miner(s)")

    def switches_removed(self, device_ids: Collection[str]) -> None:
        self._write_many("DELETE FROM switches WHERE device_id = ?", [(d,) for d in device_ids],
                         f"on/off changes of {len(device_ids)} miner(s)")

    def _setting(self, key: str, value: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)),
                    f"setting {key}")

    def _write(self, sql: str, params: tuple[Any, ...], what: str) -> None:
        self._write_many(sql, [params], what)

    def _write_many(self, sql: str, rows: list[tuple[Any, ...]], what: str) -> None:
        if not rows:
            return
        try:
            with transaction(self._conn):
                self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:  # disk full, I/O error, lock timeout: nothing was written
            raise StateError(f"state {self.path}: saving {what} failed: {exc}") from exc

    # -- read back -------------------------------------------------------------------------------

    def load(self) -> SavedState:
        """Everything saved. A row that cannot be read back is left out and named in
        ``problems``: a restart restores what it can rather than refusing to control the site."""
        problems: list[str] = []
        try:
            events = self._rows("SELECT name, limit_watts, start_us, end_us, priority FROM budget_events"
                                " ORDER BY start_us, name", _event, problems)
            overrides = dict(self._rows("SELECT scope, target, state, until_us, set_by FROM overrides"
                                        " ORDER BY scope, target", _override, problems))
            settings = dict(self._conn.execute("SELECT key, value FROM settings").fetchall())
            switches = dict(self._rows("SELECT device_id, way, at_us FROM switches ORDER BY device_id",
                                       _switched, problems))
        except sqlite3.Error as exc:
            raise StateError(f"state {self.path}: cannot be read: {exc}") from exc
        paused = _setting_field(settings, MANUAL_MODE, "paused", bool, problems) or False
        policy = None
        path = _setting_field(settings, POLICY, "path", str, problems)
        if path:
            site_path = _setting_field(settings, POLICY, "site_path", str, problems)
            policy = SavedPolicy(path, site_path)
        return SavedState(tuple(events), overrides, paused, policy, switches, tuple(problems))

    def _rows(self, sql: str, parse: Any, problems: list[str]) -> list[Any]:
        parsed = []
        for row in self._conn.execute(sql).fetchall():
            try:
                parsed.append(parse(*row))
            except (TypeError, ValueError, OverflowError) as exc:
                problems.append(f"{row[0]!r}: {exc}")
        return parsed

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _event(name: str, limit: float, start_us: int, end_us: int | None, priority: int) -> BudgetEvent:
    if not isinstance(name, str) or not isinstance(limit, int | float) or not isinstance(priority, int):
        raise TypeError("budget event row has a field of the wrong type")
    return BudgetEvent(name, float(limit), from_microseconds(start_us),
                       None if end_us is None else from_microseconds(end_us), priority)


def _override(scope: str, target: str, state: str, until_us: int | None, by: str) -> tuple[tuple[str, str], Override]:
    if scope not in SCOPES or not isinstance(target, str) or not isinstance(by, str):
        raise TypeError(f"override row {scope!r}/{target!r} has a field of the wrong type")
    return (scope, target), Override(Forced(state), None if until_us is None else from_microseconds(until_us), by)


def _switched(device_id: str, way: str, at_us: int) -> tuple[str, Switched]:
    if not isinstance(device_id, str) or way not in ("on", "off"):
        raise TypeError(f"switch row {device_id!r} has a field of the wrong type")
    return device_id, Switched(way == "on", from_microseconds(at_us))


def _setting_field(settings: dict[str, str], key: str, name: str, kind: type, problems: list[str]) -> Any:
    if key not in settings:
        return None
    try:
        value = json.loads(settings[key]).get(name)
    except (ValueError, AttributeError) as exc:
        problems.append(f"setting {key}: {exc}")
        return None
    if value is not None and not isinstance(value, kind):
        problems.append(f"setting {key}.{name}: {value!r} is not a {kind.__name__}")
        return None
    return value
