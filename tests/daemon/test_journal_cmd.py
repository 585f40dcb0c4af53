"""The `wattshift journal` command and its time parsing."""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from wattshift.daemon.cli.journal import parse_time, register
from wattshift.daemon.journal.store import SCHEMA_VERSION, Journal, journal_path

MINUTE = timedelta(minutes=1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"


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
