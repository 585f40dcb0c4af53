"""``wattshift journal``: read the daemon's journal from the command line.

The database is opened read-only (SQLite URI ``mode=ro``), so an operator's query can never
write to the running daemon's journal or hold its write lock. Times are shown in UTC.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wattshift.daemon.journal.store import (
    EntryKind,
    Journal,
    JournalEntry,
    JournalError,
    journal_path,
)

DEFAULT_STATE_DIR = Path("/var/lib/wattshift")
DEFAULT_LIMIT = 100
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_AGE_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_TIME_FORMS = "ISO 8601 like 2026-11-21T10:00, or an age like 15m, 2h, 1d"


class _UsageError(Exception):
    """A bad option value; the message names the option and the value."""


def parse_time(text: str, now: datetime) -> datetime:
    """An ISO 8601 time, or an age ("15m", "2h", "1d"; also "s" and "w") meaning that long
    before ``now``. An ISO time without an offset is in ``now``'s zone. Returns UTC."""
    if now.utcoffset() is None:
        raise ValueError(f"now: {now!r} is not timezone-aware")
    stripped = text.strip()
    age = _AGE.fullmatch(stripped.lower())
    if age is not None:
        return (now - int(age[1]) * _AGE_UNITS[age[2]]).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time (expected {_TIME_FORMS})") from None
    if parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=now.tzinfo)
    return parsed.astimezone(UTC)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``journal`` subcommand; it sets ``func=run``."""
    parser = subparsers.add_parser(
        "journal",
        help="show the journal of decisions, commands, results and events",
        description="Show the newest matching journal entries, oldest first. Times are UTC.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, metavar="DIR",
                       help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})")
    where.add_argument("--db", type=Path, metavar="FILE", help="the journal file itself")
    parser.add_argument("--since", metavar="TIME", help=f"from this time on ({_TIME_FORMS})")
    parser.add_argument("--until", metavar="TIME", help="before this time (same forms)")
    parser.add_argument("--device", help="only entries about this device")
    parser.add_argument("--kind", choices=[kind.value for kind in EntryKind])
    parser.add_argument("--limit", type=_positive_int, default=DEFAULT_LIMIT, metavar="N",
                        help=f"show at most the newest N entries (default {DEFAULT_LIMIT})")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the entries ``args`` select; returns the exit code."""
    try:
        entries = _select(args, datetime.now(UTC))
    except _UsageError as exc:
        print(f"wattshift journal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:
        print(f"wattshift journal: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        for entry in entries:
            print(json.dumps(_as_json(entry)))
    elif entries:
        print(_table(entries))
    else:
        print("wattshift journal: no entries match", file=sys.stderr)
    return EXIT_OK


def _select(args: argparse.Namespace, now: datetime) -> list[JournalEntry]:
    since = _time_option(args.since, "--since", now)
    until = _time_option(args.until, "--until", now)
    if since is not None and until is not None and until <= since:
        raise _UsageError(f"--until {args.until!r} is not after --since {args.since!r}")
    if args.db is not None:
        path, option, value = args.db, "--db", args.db
    else:
        path, option, value = journal_path(args.state_dir), "--state-dir", args.state_dir
    if not path.is_file():
        raise _UsageError(f"{option} {value}: no journal at {path}")
    with Journal(path, read_only=True) as journal:
        # Newest first so --limit keeps the most recent entries; shown oldest first, like a log.
        newest = journal.query(since=since, until=until, device=args.device, kind=args.kind,
                               limit=args.limit, newest_first=True)
    return newest[::-1]


def _time_option(text: str | None, option: str, now: datetime) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise _UsageError(f"{option}: {exc}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _as_json(entry: JournalEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "kind": entry.kind.value,
        "device": entry.device,
        "summary": entry.summary,
        "data": entry.data,
    }


def _table(entries: list[JournalEntry]) -> str:
    device_width = max(len("DEVICE"), *(len(entry.device or "-") for entry in entries))
    kind_width = max(len(kind.value) for kind in EntryKind)

    def line(at: str, kind: str, device: str, summary: str) -> str:
        return f"{at:<24}  {kind:<{kind_width}}  {device:<{device_width}}  {summary}".rstrip()

    lines = [line("TIME (UTC)", "KIND", "DEVICE", "SUMMARY")]
    for entry in entries:
        at = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        # One entry, one line: a newline inside a summary must not look like another entry.
        summary = " ".join(entry.summary.split())
        lines.append(line(at, entry.kind.value, entry.device or "-", summary))
    return "\n".join(lines)
