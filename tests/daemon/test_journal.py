"""The journal: durable, atomic per batch, refuses secrets and bad input, never blocks the loop.
Its CLI is tested in test_journal_cmd.py."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattshift.daemon.journal.entries import looks_secret
from wattshift.daemon.journal.store import (
    SCHEMA_VERSION,
    AsyncJournal,
    EntryKind,
    Journal,
    JournalError,
    NewEntry,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"


def summaries(journal: Journal, **filters: Any) -> list[str]:
    return [entry.summary for entry in journal.query(**filters)]


# --- storage -----------------------------------------------------------------------------------


def test_round_trip_survives_reopening(db: Path) -> None:
    texas = timezone(timedelta(hours=-6))
    at = datetime(2026, 11, 21, 4, 0, 0, 123456, tzinfo=texas)
    data = {"target_watts": 2800.0, "reasons": ["hashprice 38.2", "headroom"], "nested": {"n": 3}}
    with Journal(db) as journal:
        entry_id = journal.record(EntryKind.COMMAND, "set power 2800 W", device="m-01", data=data,
                                  at=at)
    with Journal(db) as journal:
        [entry] = journal.query()
    assert (entry.id, entry.kind, entry.device, entry.summary, entry.data) == (
        entry_id, EntryKind.COMMAND, "m-01", "set power 2800 W", data)
    assert entry.at == datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=UTC)
    assert entry.at.utcoffset() == timedelta(0)


def test_time_defaults_to_the_clock_and_kind_may_be_its_string(db: Path) -> None:
    with Journal(db, clock=lambda: T0) as journal:
        journal.record("event", "daemon started")
        [entry] = journal.query()
    assert (entry.at, entry.kind, entry.device, entry.data) == (T0, EntryKind.EVENT, None, {})


def test_file_is_wal_with_full_sync_and_indexed_by_time_and_device(db: Path) -> None:
    with Journal(db) as journal:
        # synchronous is per connection, so only the journal's own connection can tell.
        assert journal._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    outside = sqlite3.connect(db)
    try:
        assert outside.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert outside.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = " ".join(row[-1] for row in outside.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE device = 'm1' AND at_us >= 0"))
        assert "entries_by_device" in plan
        plan = " ".join(row[-1] for row in outside.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM entries WHERE at_us >= 0 ORDER BY at_us"))
        assert "entries_by_time" in plan
    finally:
        outside.close()


@pytest.fixture
def filled(db: Path) -> Journal:
    rows = [  # minute offset, kind, device
        (0, EntryKind.EVENT, None), (1, EntryKind.DECISION, "m1"), (2, EntryKind.COMMAND, "m1"),
        (3, EntryKind.RESULT, "m1"), (4, EntryKind.COMMAND, "m2"), (5, EntryKind.RESULT, "m2"),
    ]
    journal = Journal(db)
    journal.record_many(NewEntry(kind, f"e{minute}", device, at=T0 + minute * MINUTE)
                        for minute, kind, device in rows)
    return journal


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, ["e0", "e1", "e2", "e3", "e4", "e5"]),
    ({"since": T0 + 2 * MINUTE}, ["e2", "e3", "e4", "e5"]),  # since is inclusive
    ({"until": T0 + 2 * MINUTE}, ["e0", "e1"]),  # until is exclusive
    ({"since": T0 + MINUTE, "until": T0 + 4 * MINUTE}, ["e1", "e2", "e3"]),
    ({"device": "m1"}, ["e1", "e2", "e3"]),
    ({"kind": EntryKind.COMMAND}, ["e2", "e4"]),
    ({"kind": "result", "device": "m2"}, ["e5"]),
    ({"device": "m9"}, []),
    ({"limit": 2}, ["e0", "e1"]),
    ({"limit": 2, "newest_first": True}, ["e5", "e4"]),
    ({"since": T0.astimezone(timezone(timedelta(hours=2))) + 5 * MINUTE}, ["e5"]),
])
def test_query_filters(filled: Journal, filters: dict[str, Any], expected: list[str]) -> None:
    with filled:
        assert summaries(filled, **filters) == expected


@pytest.mark.parametrize(("filters", "named"), [
    ({"limit": 0}, "limit"),
    ({"since": datetime(2026, 11, 21, 10, 0)}, "since"),  # naive: which zone?
    ({"until": "2026-11-21"}, "until"),
    ({"kind": "decisions"}, "'decisions'"),
])
def test_query_refuses_bad_filters(filled: Journal, filters: dict[str, Any], named: str) -> None:
    with filled, pytest.raises(ValueError, match=named):
        filled.query(**filters)


def test_record_many_returns_ids_in_order(db: Path) -> None:
    with Journal(db) as journal:
        first = journal.record("event", "start")
        ids = journal.record_many(NewEntry("command", f"c{n}", "m1") for n in range(5))
        assert ids == list(range(first + 1, first + 6))
        assert journal.record_many([]) == []
        assert [e.id for e in journal.query()] == [first, *ids]


@pytest.mark.parametrize(("bad", "named"), [
    (NewEntry("decisoin", "typo"), "entry 2: kind: unknown kind 'decisoin'"),
    (NewEntry("event", "x", data={"at": {1, 2}}), "entry 2: data is not JSON-serialisable"),
    (NewEntry("event", "x", data={"watts": math.nan}), "entry 2: data is not JSON-serialisable"),
    # Wrong types on purpose: callers outside a type checker (JSON from MQTT) can send them.
    (NewEntry("event", "x", data={1: "a"}),  # type: ignore[dict-item]
     r"entry 2: data: key 1 is not a string"),
    (NewEntry("event", "x", data=["not", "a", "dict"]),  # type: ignore[arg-type]
     "entry 2: data must be a mapping"),
    (NewEntry("event", ""), "entry 2: summary"),
    (NewEntry("event", "x", device=""), "entry 2: device"),
    (NewEntry("event", "x", at=datetime(2026, 11, 21)), "entry 2: at"),
    (NewEntry("command", "login", data={"password": "hunter2"}), r"entry 2: data\['password'\]"),
])
def test_one_bad_entry_writes_nothing_of_its_batch(db: Path, bad: NewEntry, named: str) -> None:
    with Journal(db) as journal:
        journal.record("event", "before")
        batch = [NewEntry("decision", "ok 0"), NewEntry("command", "ok 1", "m1"), bad]
        with pytest.raises(ValueError, match=named):
            journal.record_many(batch)
        assert summaries(journal) == ["before"]


def test_a_failure_inside_the_transaction_rolls_the_whole_batch_back(db: Path) -> None:
    with Journal(db) as journal:
        # A trigger makes the database itself refuse the third row, after two were inserted.
        with sqlite3.connect(db) as other:
            other.execute("CREATE TRIGGER refuse BEFORE INSERT ON entries WHEN NEW.summary = 'boom'"
                          " BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
        batch = [NewEntry("command", "a", "m1"), NewEntry("command", "b", "m2"),
                 NewEntry("command", "boom", "m3")]
        with pytest.raises(JournalError, match="refused by test trigger"):
            journal.record_many(batch)
        assert summaries(journal) == []
        journal.record("event", "still writable")  # the failed transaction was closed
        assert summaries(journal) == ["still writable"]


@pytest.mark.parametrize("data", [
    {"password": "hunter2"},
    {"api_key": "hunter2"},
    {"apiKey": "hunter2"},
    {"X-Hi-Api-Key": "hunter2"},
    {"Token": "hunter2"},
    {"accesstoken": "hunter2"},
    {"luxos_session": "hunter2"},
    {"miner": {"login": {"Secret": "hunter2"}}},
    {"pools": [{"url": "stratum+tcp://pool", "credentials": "hunter2"}]},
])
def test_secrets_are_refused_and_the_message_does_not_repeat_them(
        db: Path, data: dict[str, Any]) -> None:
    with Journal(db) as journal:
        with pytest.raises(ValueError, match="looks like a credential") as refused:
            journal.record("command", "configure", device="m1", data=data)
        assert "hunter2" not in str(refused.value)
        assert summaries(journal) == []


@pytest.mark.parametrize("key", ["tokens_per_second", "monkey", "hashboards", "worst_after",
                                 "keys_pressed"])
def test_ordinary_keys_are_not_mistaken_for_secrets(key: str) -> None:
    assert not looks_secret(key)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text().filter(lambda k: not looks_secret(k)), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(data=st.dictionaries(st.text().filter(lambda k: not looks_secret(k)), json_values))
def test_any_json_object_comes_back_unchanged(
        tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> None:
    with Journal(tmp_path_factory.mktemp("j") / "journal.sqlite3") as journal:
        entry_id = journal.record("decision", "round trip", data=data)
        [entry] = journal.query()
    assert (entry.id, entry.data) == (entry_id, data)


def test_newer_schema_is_refused_and_left_alone(db: Path) -> None:
    Journal(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for read_only in (False, True):
        with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1} .* newer"):
            Journal(db, read_only=read_only)
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_files_that_are_not_a_journal_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database at all, not even close" * 100)
    with pytest.raises(JournalError, match="cannot be read"):
        Journal(garbage)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE miners (ip TEXT)")
    with pytest.raises(JournalError, match="some other SQLite database"):
        Journal(other)


def test_read_only_journal_reads_but_never_writes_or_creates(db: Path, tmp_path: Path) -> None:
    with Journal(db) as journal:
        journal.record("event", "start")
    with Journal(db, read_only=True) as reader:
        assert summaries(reader) == ["start"]
        with pytest.raises(JournalError, match="read-only"):
            reader.record("event", "sneaky")
    missing = tmp_path / "nowhere" / "journal.sqlite3"
    with pytest.raises(JournalError, match="no such file"):
        Journal(missing, read_only=True)
    assert not missing.parent.exists()


def test_closed_journal_says_so(db: Path) -> None:
    journal = Journal(db)
    journal.close()
    journal.close()  # closing twice is harmless
    with pytest.raises(JournalError, match="closed"):
        journal.record("event", "late")


KILLED_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from wattshift.daemon.journal.store import Journal

    journal = Journal(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        entry_id = journal.record("command", f"set power {n}", device="m1", data={"n": n})
        print(entry_id, n, flush=True)  # only after record returned
""")


def test_every_id_returned_before_a_sigkill_is_on_disk(db: Path, tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, writer.kill)  # a stuck writer fails the test, not hangs it
    watchdog.start()
    try:
        assert writer.stdout is not None
        printed = [writer.stdout.readline() for _ in range(150)]
        os.kill(writer.pid, signal.SIGKILL)  # mid-stream: the writer never pauses
        printed += writer.stdout.readlines()  # lines already in the pipe when it died
    finally:
        watchdog.cancel()
        writer.kill()
        _, stderr = writer.communicate(timeout=10)
    assert writer.returncode == -signal.SIGKILL, stderr
    acknowledged: dict[int, int] = {}  # id -> n
    for line in filter(str.strip, printed):
        entry_id, n = map(int, line.split())
        acknowledged[entry_id] = n
    assert len(acknowledged) >= 150, stderr
    with Journal(db) as journal:
        stored = {entry.id: entry.data["n"] for entry in journal.query(limit=1_000_000)}
    assert {i: stored.get(i) for i in acknowledged} == acknowledged


# --- asyncio -----------------------------------------------------------------------------------


async def test_async_journal_round_trip_and_close(db: Path) -> None:
    async with await AsyncJournal.open(db, clock=lambda: T0) as journal:
        first = await journal.record("event", "start")
        ids = await journal.record_many([NewEntry("command", "set", "m1", {"watts": 2800})])
        entries = await journal.query(device="m1")
        with pytest.raises(ValueError, match="looks like a credential"):
            await journal.record("command", "login", data={"token": "abc"})
    assert ids == [first + 1]
    assert [(e.id, e.at, e.data) for e in entries] == [(first + 1, T0, {"watts": 2800})]
    with pytest.raises(JournalError, match="closed"):
        await journal.record("event", "after close")


async def test_async_write_waits_off_the_loop_while_the_database_is_locked(db: Path) -> None:
    async with await AsyncJournal.open(db) as journal:
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the write must wait
        try:
            write = asyncio.create_task(journal.record("event", "waited"))
            ticks = 0
            for _ in range(200):  # were the write on the loop, these could not run until it ended
                await asyncio.sleep(0)
                ticks += 1
            assert ticks == 200 and not write.done()
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        entry_id = await asyncio.wait_for(write, timeout=5)
        assert [e.id for e in await journal.query()] == [entry_id]


async def test_loop_keeps_ticking_during_a_batch_of_writes(db: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async with await AsyncJournal.open(db) as journal:
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        for batch in range(5):
            await journal.record_many(NewEntry("decision", f"{batch}/{n}") for n in range(200))
        during = ticks - before
        ticking.cancel()
        assert len(await journal.query(limit=10_000)) == 1000
    assert during >= 5  # at least one loop iteration per batch ran while the worker wrote


async def test_aclose_finishes_writes_already_submitted(db: Path) -> None:
    journal = await AsyncJournal.open(db)
    writes = [asyncio.create_task(journal.record("command", f"c{n}")) for n in range(20)]
    await asyncio.sleep(0)  # each task has now handed its write to the worker
    await journal.aclose()
    ids = [write.result() for write in writes]
    with Journal(db) as reopened:
        assert [(e.id, e.summary) for e in reopened.query()] == [
            (entry_id, f"c{n}") for n, entry_id in enumerate(ids)]
