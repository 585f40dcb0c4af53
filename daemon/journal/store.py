"""The daemon's durable audit log (DESIGN.md invariant 6, "Nothing lost").

Every decision with its reasons, every command sent and its result, and every external event
(config change, device lost or found, budget change, startup, shutdown) is one row in a SQLite
database in WAL mode. An id returned by :meth:`Journal.record` is on disk: a kill or a power
cut after that cannot lose the row.

:class:`Journal` is synchronous and belongs to one thread. The asyncio daemon uses
:class:`AsyncJournal`, which runs a Journal on one dedicated worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .entries import (
    EntryKind,
    JournalEntry,
    NewEntry,
    from_microseconds,
    parse_kind,
    to_microseconds,
    to_row,
)

__all__ = [
    "AsyncJournal", "EntryKind", "Journal", "JournalEntry", "JournalError", "NewEntry",
    "journal_path", "transaction", "utc_now",
]

SCHEMA_VERSION = 1
JOURNAL_FILE_NAME = "journal.sqlite3"
BUSY_TIMEOUT_S = 10.0  # a reader or a second writer holds the lock for milliseconds at most
_T = TypeVar("_T")

_SCHEMA = (
    """CREATE TABLE entries (
    -- AUTOINCREMENT: an id is never reused, even after old rows are pruned, so an id quoted
    -- in a ticket or a log line always means the same entry.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,  -- microseconds since 1970-01-01 UTC: exact, and sorts as time
    kind TEXT NOT NULL,
    device TEXT,
    summary TEXT NOT NULL,
    data TEXT NOT NULL  -- a JSON object, which SQLite's json_extract() can query
)""",
    "CREATE INDEX entries_by_time ON entries (at_us)",
    "CREATE INDEX entries_by_device ON entries (device, at_us)",
)


class JournalError(Exception):
    """The journal file cannot be used (wrong version, not a database, closed, read-only)."""


def journal_path(state_dir: Path) -> Path:
    """Where the journal lives inside the daemon's state directory."""
    return state_dir / JOURNAL_FILE_NAME


def utc_now() -> datetime:
    return datetime.now(UTC)


class Journal:
    """The journal on one SQLite file. Not thread-safe: use it from the thread that opened it
    (sqlite3's own same-thread check enforces this)."""

    def __init__(
        self, path: Path, *, read_only: bool = False, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._clock = clock
        self._closed = False
        self._conn = _connect(path, read_only)
        try:
            self._prepare()
        except sqlite3.Error as exc:  # "file is not a database", a disk error, a lock timeout
            self._conn.close()
            raise JournalError(f"journal {path}: cannot be read: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self) -> None:
        try:
            prepare_durable(self._conn, f"journal {self.path}", _SCHEMA, SCHEMA_VERSION, read_only=self.read_only)
        except SchemaError as err:
            raise JournalError(str(err)) from None

    def record(
        self,
        kind: EntryKind | str,
        summary: str,
        *,
        device: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        """Write one entry durably and return its id."""
        return self.record_many([NewEntry(kind, summary, device, data, at)])[0]

    def record_many(self, entries: Iterable[NewEntry]) -> list[int]:
        """Write all entries in one transaction (one fsync), or none if any is invalid."""
        self._check_writable()
        now = self._clock()
        rows = [to_row(entry, now, f"entry {index}") for index, entry in enumerate(entries)]
        if not rows:
            return []
        try:
            with transaction(self._conn):
                return [
                    _lastrowid(self._conn.execute(
                        "INSERT INTO entries (at_us, kind, device, summary, data)"
                        " VALUES (?, ?, ?, ?, ?)", row))
                    for row in rows
                ]
        except sqlite3.Error as exc:  # disk full, I/O error, lock timeout: nothing was written
            raise JournalError(f"journal {self.path}: writing {len(rows)} entries failed: "
                               f"{exc}") from exc

    def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        device: str | None = None,
        kind: EntryKind | str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[JournalEntry]:
        """Entries with ``since <= at < until``, in time order, at most ``limit`` of them."""
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit!r}")
        conditions = {  # SQL condition -> its parameter; None means "no filter"
            "at_us >= ?": None if since is None else to_microseconds(since, "since"),
            "at_us < ?": None if until is None else to_microseconds(until, "until"),
            "device = ?": device,
            "kind = ?": None if kind is None else parse_kind(kind, "kind").value,
        }
        used = {sql: value for sql, value in conditions.items() if value is not None}
        order = "DESC" if newest_first else "ASC"
        rows = self._conn.execute(
            f"SELECT id, at_us, kind, device, summary, data FROM entries"
            f" WHERE {' AND '.join(used) or 'TRUE'} ORDER BY at_us {order}, id {order} LIMIT ?",
            [*used.values(), limit],
        ).fetchall()
        return [
            JournalEntry(id_, from_microseconds(at_us), EntryKind(kind_), device_, summary,
                         json.loads(data))
            for id_, at_us, kind_, device_, summary, data in rows
        ]

    def last_event_id(self, summary_prefix: str) -> int:
        """The id of the newest event whose summary starts with ``summary_prefix``; 0 if none.
        Read from the newest row back, so it costs the rows written since that event."""
        self._check_open()
        row = self._conn.execute(
            "SELECT id FROM entries WHERE kind = ? AND substr(summary, 1, ?) = ? ORDER BY id DESC LIMIT 1",
            (EntryKind.EVENT.value, len(summary_prefix), summary_prefix),
        ).fetchone()
        return int(row[0]) if row else 0

    def open_commands(self, *, after: int = 0) -> list[JournalEntry]:
        """Commands (with ids above ``after``) that no result follows: what a daemon that died
        (SIGKILL, power cut) had journaled and was sending. The loop journals a batch of
        commands, sends it, then journals its results, and never sends a device a second command
        before the first one's result, so on each device a command's result is the next result."""
        self._check_open()
        rows = self._conn.execute(
            "SELECT id, at_us, kind, device, summary, data FROM entries"
            " WHERE id > ? AND kind IN (?, ?) ORDER BY id",
            (after, EntryKind.COMMAND.value, EntryKind.RESULT.value),
        ).fetchall()
        pending: dict[str | None, tuple[Any, ...]] = {}
        for row in rows:
            if row[2] == EntryKind.COMMAND.value:
                pending[row[3]] = row
            else:
                pending.pop(row[3], None)
        return [
            JournalEntry(id_, from_microseconds(at_us), EntryKind(kind_), device_, summary, json.loads(data))
            for id_, at_us, kind_, device_, summary, data in sorted(pending.values())
        ]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"journal {self.path}: already closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise JournalError(f"journal {self.path}: opened read-only")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception. IMMEDIATE takes the write
    lock up front, so a busy database fails (or waits) before any row is written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT may leave it open; the next BEGIN would fail
            conn.execute("ROLLBACK")
        raise


class SchemaError(ValueError):
    """A SQLite file that is not ours, or not one this version can use; the message says which."""


def prepare_durable(
    conn: sqlite3.Connection, what: str, schema: Sequence[str], schema_version: int, *, read_only: bool = False
) -> None:
    """Check a wattshift SQLite file's schema version, make its writes durable, and create the
    schema in a new file. The journal and the operator's state file share this.

    WAL: readers (the CLI, a dashboard) never block the daemon's writes, and a commit appends to
    one file. synchronous=FULL fsyncs the WAL at every commit; the default in WAL mode (NORMAL)
    may lose the last commits on power loss, which would break the promise that what a write
    returned is kept.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise SchemaError(f"{what}: is some other SQLite database (it has tables but no wattshift schema version)")
    if version > schema_version:
        raise SchemaError(f"{what}: schema version {version} was written by a newer wattshift; this one"
                          f" understands up to version {schema_version}. Upgrade wattshift or move the file aside.")
    if read_only:
        if version == 0:
            raise SchemaError(f"{what}: not a wattshift file (no schema)")
        return
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise SchemaError(f"{what}: cannot use WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=FULL")
    if version == 0:
        with transaction(conn):
            # Re-read under the write lock: another process may have created it meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in schema:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={schema_version}")


def create_private(path: Path) -> None:
    """The site's history and state are their owner's alone, also outside systemd (which makes
    the state directory 0700): the directory 0700, the file 0600; SQLite gives -wal/-shm its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:
        if not path.is_file():
            raise JournalError(f"journal {path}: no such file")
        # mode=ro: an operator's query can never write to, lock for writing, or create the
        # daemon's file.
        target, uri = f"{path.resolve().as_uri()}?mode=ro", True
    else:
        target, uri = str(path), False
    try:
        if not read_only:
            create_private(path)
        # isolation_level=None: no implicit transactions; transaction() says where each starts.
        return sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise JournalError(f"journal {path}: cannot open: {exc}") from exc


def _lastrowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None  # always set after a single-row INSERT
    return cursor.lastrowid


# --- asyncio ----------------------------------------------------------------------------------


class AsyncJournal:
    """A :class:`Journal` on one dedicated worker thread, so fsyncs never block the event loop.

    Open it with ``await AsyncJournal.open(path)``. The sqlite3 connection is created on the
    worker thread and keeps sqlite3's same-thread check on: every call runs on that one thread,
    in submission order, so calls are serialised without a lock, and any slip that touched the
    connection from another thread would raise at once instead of racing. Entries get their
    time when the coroutine is called, not when the worker gets to them.
    """

    def __init__(self, journal: Journal, executor: ThreadPoolExecutor,
                 clock: Callable[[], datetime]) -> None:
        """Internal: use :meth:`open`. ``journal`` must belong to ``executor``'s one thread."""
        self._journal = journal
        self._executor = executor
        self._clock = clock
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], datetime] = utc_now) -> AsyncJournal:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wattshift-journal")
        try:
            journal = await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(Journal, path, clock=clock))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(journal, executor, clock)

    async def record(
        self,
        kind: EntryKind | str,
        summary: str,
        *,
        device: str | None = None,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> int:
        return (await self.record_many([NewEntry(kind, summary, device, data, at)]))[0]

    async def record_many(self, entries: Iterable[NewEntry]) -> list[int]:
        """Like :meth:`Journal.record_many`. Cancelling the awaiting task drops a write that is
        still queued; one the worker has started completes (on disk, only its ids are lost)."""
        now = self._clock()
        stamped = [entry if entry.at is not None else replace(entry, at=now) for entry in entries]
        return await self._run(functools.partial(self._journal.record_many, stamped))

    async def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        device: str | None = None,
        kind: EntryKind | str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[JournalEntry]:
        """Like :meth:`Journal.query`."""
        return await self._run(functools.partial(
            self._journal.query, since=since, until=until, device=device, kind=kind,
            limit=limit, newest_first=newest_first))

    async def last_event_id(self, summary_prefix: str) -> int:
        """Like :meth:`Journal.last_event_id`."""
        return await self._run(functools.partial(self._journal.last_event_id, summary_prefix))

    async def open_commands(self, *, after: int = 0) -> list[JournalEntry]:
        """Like :meth:`Journal.open_commands`."""
        return await self._run(functools.partial(self._journal.open_commands, after=after))

    async def aclose(self) -> None:
        """Close after every write already submitted has finished."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._journal.close)
        finally:
            self._executor.shutdown(wait=False)  # the worker is idle now; it exits by itself

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _run(self, call: Callable[[], _T]) -> _T:
        if self._closed:
            raise JournalError(f"journal {self._journal.path}: already closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)
