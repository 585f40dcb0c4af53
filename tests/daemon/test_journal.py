"""The journal: durable, atomic per batch, refuses secrets and bad input, never blocks the loop,
and its CLI reads it without touching it."""

from __future__ import annotations

import argparse
import asyncio
import json
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

from wattshift.daemon.journal import (
    SCHEMA_VERSION,
    AsyncJournal,
    EntryKind,
    Journal,
    JournalError,
    NewEntry,
    journal_path,
)
from wattshift.daemon.journal_cmd import parse_time, register
from wattshift.daemon.journal_entries import looks_secret

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
    from wattshift.daemon.journal import Journal

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


# --- CLI ---------------------------------------------------------------------------------------


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wattshift")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["journal", *argv])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = parse_cli(*argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def recent(db: Path) -> Path:
    """Entries 3 h, 50 min and 5 min old, by the real clock (the CLI reads it for ages)."""
    now = datetime.now(UTC)
    with Journal(db) as journal:
        journal.record("event", "daemon started", at=now - timedelta(hours=3))
        journal.record("command", "set power\n2800 W", device="s19-rack-12", at=now - 50 * MINUTE,
                       data={"watts": 2800})
        journal.record("result", "confirmed 2790 W", device="m2", at=now - 5 * MINUTE)
    return db


def test_cli_prints_a_table_oldest_first(capsys: pytest.CaptureFixture[str], recent: Path) -> None:
    code, out, err = run_cli(capsys, "--db", str(recent))
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["TIME", "(UTC)", "KIND", "DEVICE", "SUMMARY"]
    assert [row.split()[1:] for row in rows] == [
        ["event", "-", "daemon", "started"],
        ["command", "s19-rack-12", "set", "power", "2800", "W"],  # the newline is flattened
        ["result", "m2", "confirmed", "2790", "W"],
    ]
    assert all(row[23] == "Z" for row in rows)
    assert len({row.index(row.split()[3]) for row in rows}) == 1  # summaries line up


@pytest.mark.parametrize(("options", "expected"), [
    (["--since", "1h"], ["set power 2800 W", "confirmed 2790 W"]),
    (["--since", "2h", "--until", "10m"], ["set power 2800 W"]),
    (["--device", "m2"], ["confirmed 2790 W"]),
    (["--kind", "event"], ["daemon started"]),
    (["--limit", "2"], ["set power 2800 W", "confirmed 2790 W"]),  # newest two, oldest first
])
def test_cli_filters(capsys: pytest.CaptureFixture[str], recent: Path, options: list[str],
                     expected: list[str]) -> None:
    code, out, _ = run_cli(capsys, "--db", str(recent), *options)
    assert code == 0
    assert [" ".join(row.split()[3:]) for row in out.splitlines()[1:]] == expected


def test_cli_json_lines(capsys: pytest.CaptureFixture[str], recent: Path) -> None:
    code, out, _ = run_cli(capsys, "--state-dir", str(recent.parent), "--json", "--since", "1h")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(o["kind"], o["device"], o["summary"], o["data"]) for o in lines] == [
        ("command", "s19-rack-12", "set power\n2800 W", {"watts": 2800}),
        ("result", "m2", "confirmed 2790 W", {}),
    ]
    assert lines[1]["id"] == lines[0]["id"] + 1
    assert datetime.fromisoformat(lines[1]["at"]) - datetime.fromisoformat(lines[0]["at"]) == \
        45 * MINUTE


def test_cli_reads_while_the_daemon_holds_the_write_lock(
        capsys: pytest.CaptureFixture[str], recent: Path) -> None:
    daemon = sqlite3.connect(recent, isolation_level=None)
    try:
        daemon.execute("BEGIN IMMEDIATE")
        daemon.execute("INSERT INTO entries (at_us, kind, summary, data)"
                       " VALUES (0, 'event', 'uncommitted', '{}')")
        code, out, _ = run_cli(capsys, "--db", str(recent), "--json")
    finally:
        daemon.execute("ROLLBACK")
        daemon.close()
    assert code == 0
    assert [json.loads(line)["summary"] for line in out.splitlines()] == [
        "daemon started", "set power\n2800 W", "confirmed 2790 W"]


def test_cli_with_nothing_matching_says_so(capsys: pytest.CaptureFixture[str], recent: Path
                                          ) -> None:
    assert run_cli(capsys, "--db", str(recent), "--device", "m9") == (
        0, "", "wattshift journal: no entries match\n")


@pytest.mark.parametrize(("options", "named"), [
    (["--since", "3x"], "--since: cannot read '3x' as a time"),
    (["--until", "yesterday"], "--until: cannot read 'yesterday' as a time"),
    (["--since", "1h", "--until", "2h"], "--until '2h' is not after --since '1h'"),
])
def test_cli_bad_time_is_a_one_line_usage_error(
        capsys: pytest.CaptureFixture[str], recent: Path, options: list[str], named: str) -> None:
    code, out, err = run_cli(capsys, "--db", str(recent), *options)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and named in err


def test_cli_missing_journal_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    assert run_cli(capsys, "--db", str(missing)) == (
        2, "", f"wattshift journal: --db {missing}: no journal at {missing}\n")
    code, _, err = run_cli(capsys, "--state-dir", str(tmp_path))
    assert (code, err) == (2, f"wattshift journal: --state-dir {tmp_path}: no journal at "
                              f"{journal_path(tmp_path)}\n")
    assert not journal_path(tmp_path).exists()  # reading never creates a journal


def test_cli_newer_journal_fails_with_one_line(capsys: pytest.CaptureFixture[str], db: Path
                                               ) -> None:
    Journal(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    code, out, err = run_cli(capsys, "--db", str(db))
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert "newer wattshift" in err


@pytest.mark.parametrize("argv", [
    ["--kind", "decisions"], ["--limit", "0"], ["--limit", "ten"],
    ["--db", "a.sqlite3", "--state-dir", "/tmp"],
])
def test_cli_option_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_cli(*argv)
    assert exited.value.code == 2
    assert argv[-2] in capsys.readouterr().err  # argparse names the option


# --- parse_time --------------------------------------------------------------------------------

TEXAS_NOW = datetime(2026, 11, 21, 6, 30, tzinfo=timezone(timedelta(hours=-6)))  # 12:30 UTC


@pytest.mark.parametrize(("text", "expected"), [
    ("15m", datetime(2026, 11, 21, 12, 15, tzinfo=UTC)),
    ("2h", datetime(2026, 11, 21, 10, 30, tzinfo=UTC)),
    ("1d", datetime(2026, 11, 20, 12, 30, tzinfo=UTC)),
    ("30s", datetime(2026, 11, 21, 12, 29, 30, tzinfo=UTC)),
    ("1w", datetime(2026, 11, 14, 12, 30, tzinfo=UTC)),
    (" 2H ", datetime(2026, 11, 21, 10, 30, tzinfo=UTC)),
    ("2026-11-21T10:00", datetime(2026, 11, 21, 16, 0, tzinfo=UTC)),  # in now's zone
    ("2026-11-21T10:00+02:00", datetime(2026, 11, 21, 8, 0, tzinfo=UTC)),
    ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),
    ("2026-11-21", datetime(2026, 11, 21, 6, 0, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text, TEXAS_NOW)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["3x", "", "yesterday", "-5m", "1.5h", "2026-13-01T00:00"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=f"cannot read {text!r}"):
        parse_time(text, TEXAS_NOW)


def test_parse_time_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="now"):
        parse_time("15m", datetime(2026, 11, 21, 12, 0))
