"""What a journal entry is, and what may go into one.

Every entry is checked here before the journal opens a transaction, so a bad entry in a batch
writes nothing. Errors are ValueErrors that name the entry, the field and the value.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = tuple[int, str, str | None, str, str]  # at_us, kind, device, summary, data (JSON)


class EntryKind(enum.StrEnum):
    """What an entry records. Stable strings: they are stored and operators filter on them."""

    DECISION = "decision"  # what the policy and sequencer chose, and why
    COMMAND = "command"  # a command sent to a device
    RESULT = "result"  # what came of a command (confirmed, refused, ignored, timed out)
    EVENT = "event"  # from outside: config change, device lost/found, budget change, start/stop


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One stored entry. ``at`` is timezone-aware UTC."""

    id: int
    at: datetime
    kind: EntryKind
    device: str | None
    summary: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to be written by :meth:`Journal.record_many`; ``at=None`` means now."""

    kind: EntryKind | str
    summary: str
    device: str | None = None
    data: Mapping[str, Any] | None = None
    at: datetime | None = None


# Words that mark a field as a credential. The journal is kept for years, read by operators
# and pasted into tickets and bug reports, so a password or a Whatsminer/LuxOS/Braiins token
# in it would outlive any rotation of that secret. A false positive costs a renamed field; a
# false negative leaks a credential. Keys are split into words ("apiKey" -> api, key).
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "pwd", "secret", "token", "key", "apikey",
    "credential", "credentials", "auth", "authorization", "cookie", "session", "sid",
})
# Run-together names ("accesstoken", "xhiapikey") are caught by their ending.
_SECRET_ENDINGS = ("password", "passwd", "secret", "token", "apikey", "privatekey", "credential")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def looks_secret(key: str) -> bool:
    words = [word.lower() for word in _WORD.findall(key)]
    joined = "".join(words)
    return any(word in _SECRET_WORDS for word in words) or joined.endswith(_SECRET_ENDINGS)


def _check_keys(value: object, where: str) -> None:
    """Refuse non-string keys (JSON would silently turn 1 into "1") and secret-like keys."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            if looks_secret(key):
                # Name the key, never the value: the error message itself goes to the logs.
                raise ValueError(f"{where}[{key!r}]: looks like a credential; "
                                 "secrets are never journaled")
            _check_keys(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_keys(item, f"{where}[{index}]")


def parse_kind(kind: EntryKind | str, where: str) -> EntryKind:
    try:
        return EntryKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in EntryKind)
        raise ValueError(f"{where}: unknown kind {kind!r} (known: {known})") from None


def to_microseconds(at: datetime, where: str) -> int:
    """``at`` as microseconds since 1970 UTC: exact, and sorts as time."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"{where}: {at!r} is not a timezone-aware datetime")
    return (at - _EPOCH) // _MICROSECOND


def from_microseconds(at_us: int) -> datetime:
    return _EPOCH + at_us * _MICROSECOND


def to_row(entry: NewEntry, now: datetime, where: str) -> Row:
    """Check ``entry`` and turn it into the values of one INSERT; ``now`` stands in for at=None."""
    kind = parse_kind(entry.kind, f"{where}: kind")
    if not isinstance(entry.summary, str) or not entry.summary:
        raise ValueError(f"{where}: summary must be a non-empty string, got {entry.summary!r}")
    if entry.device is not None and (not isinstance(entry.device, str) or not entry.device):
        raise ValueError(f"{where}: device must be a non-empty string or None, "
                         f"got {entry.device!r}")
    if entry.data is not None and not isinstance(entry.data, Mapping):
        raise ValueError(f"{where}: data must be a mapping, got {type(entry.data).__name__}")
    data = {} if entry.data is None else dict(entry.data)
    _check_keys(data, f"{where}: data")
    try:
        # allow_nan=False: NaN/Infinity are not JSON; other tools reading the file would choke.
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: data is not JSON-serialisable ({exc}): {data!r:.200}") from None
    at_us = to_microseconds(now if entry.at is None else entry.at, f"{where}: at")
    return at_us, kind.value, entry.device, entry.summary, text


