"""Commands that arrive on ``<prefix>/cmd``: their JSON shapes and their validation (pure).

One topic, one JSON object per message, ``command`` says which. Every command may carry an
``id`` (the reply goes to ``<prefix>/reply/<id>``) and a ``reply_to`` topic (used instead);
an MQTT 5 response topic and correlation data on the message win over both.

A message that is not JSON, names no known command, or has a field out of range becomes a
:class:`Rejection` that names the field, the value and the reason; nothing is applied.

Every message is hostile until proven otherwise: its size, nesting depth and number lengths are
bounded before it is parsed, every field is validated strictly (no ``true`` for 1, no ``"7"``
for 7, no ``0`` for 1970), times lie between 2000 and 2100, and nothing raises out of
:func:`parse_command`, whatever the bytes. A value that looks like a credential never comes
back in a refusal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from wattshift.daemon.config.mqtt import check_topic
from wattshift.daemon.journal.entries import looks_secret

RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
EventName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
MAX_PAYLOAD_BYTES = 16_384
MAX_DEPTH = 4  # a command is one flat object: anything deeper is not one of ours
MAX_NUMBER_CHARS = 40  # a float's repr is at most 24; Python's 4300-digit ceiling must never be reached
MAX_DURATION = timedelta(days=31)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
HIDDEN = "(hidden)"


def _in_range(value: datetime) -> datetime:
    # Bounds that keep every sum with a duration inside datetime's range (9999-12-31 + 60 s
    # raised OverflowError), and refuse a 1970 that would put an event in force at once.
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year} (UTC)")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]


class _Command(BaseModel):
    # strict: JSON types as sent; a bool or a string is never read as a number, nor a number
    # as a time. Validated from the JSON text (model_validate_json), where strict mode still
    # reads RFC 3339 strings as times.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: RequestId | None = None
    reply_to: str | None = Field(default=None, max_length=1024)
    # When the sender sent it: a command older than the site file's mqtt.commands.max_age_seconds
    # is refused (a retained or long-queued message must not act long after the fact).
    sent_at: Instant | None = None

    @field_validator("reply_to")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, what="reply_to")


class BudgetCommand(_Command):
    """Lower the site budget to ``limit_kw`` from ``start`` (default now) to ``end`` or for
    ``duration_seconds`` (default: until restored). A curtailment event named ``name``."""

    command: Literal["budget"]
    limit_kw: float = Field(ge=0, le=10_000_000)
    start: Instant | None = None
    end: Instant | None = None
    duration_seconds: float | None = Field(default=None, gt=0, le=MAX_DURATION.total_seconds())
    priority: int = Field(default=0, ge=0, le=100)
    name: EventName | None = None

    def window(self, now: datetime) -> tuple[datetime, datetime | None]:
        start = self.start or now
        if self.duration_seconds is not None:
            return start, start + timedelta(seconds=self.duration_seconds)
        return start, self.end


class RestoreCommand(_Command):
    """End the curtailment event ``name`` (the budget returns to what else is in force)."""

    command: Literal["restore"]
    name: EventName


class ForceCommand(_Command):
    """Maintenance: hold a device (``device``) or a class (``class``) on or off; ``auto`` hands
    it back to the policy. Forced on still obeys every limit (the sequencer has the last word)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    command: Literal["force"]
    device: str | None = Field(default=None, min_length=1, max_length=253)
    device_class: Literal["miner", "gpu"] | None = Field(default=None, alias="class")
    state: Literal["on", "off", "auto"]
    until: Instant | None = None


class PolicyCommand(_Command):
    """Switch to the policy file ``path`` names inside the site's policy directory (a relative
    name; the policy reloader refuses an absolute path, ``..`` or a symlink leading out)."""

    command: Literal["policy"]
    path: str = Field(min_length=1, max_length=4096)


class PauseCommand(_Command):
    """Manual mode: the loop keeps observing, deciding and journaling, but sends nothing."""

    command: Literal["pause"]
    reason: str | None = Field(default=None, max_length=500)


class ResumeCommand(_Command):
    command: Literal["resume"]
    reason: str | None = Field(default=None, max_length=500)


Command = Annotated[
    BudgetCommand | RestoreCommand | ForceCommand | PolicyCommand | PauseCommand | ResumeCommand,
    Field(discriminator="command"),
]
COMMANDS = ("budget", "restore", "force", "policy", "pause", "resume")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Command)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was refused: ``field`` and ``value`` as the sender wrote them."""

    reason: str
    field: str | None = None
    value: Any = None
    request_id: str | None = None
    command: str | None = None
    reply_to: str | None = None

    def redacted(self) -> Rejection:
        """Without anything that looks like a credential: replies and the journal are read by
        many, and a password sent to the wrong place must not spread further. A field named
        like one hides its whole value; elsewhere each value under such a key is hidden."""
        if self.field is not None and any(looks_secret(part) for part in self.field.split(".")):
            return replace(self, value=HIDDEN)
        return replace(self, value=_scrub(self.value))

    def message(self) -> str:
        if self.field is None:
            return self.reason
        return f"{self.field}={show(self.value)}: {self.reason}"


def show(value: Any) -> str:
    """``value`` as JSON text of at most 100 characters (for messages and the journal)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: HIDDEN if looks_secret(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def parse_command(payload: bytes) -> Any:
    """A validated command model, or a :class:`Rejection` (never raises, whatever the bytes)."""
    try:
        result = _parse(payload)
    except Exception as err:
        result = Rejection(f"could not be read ({type(err).__name__})", "payload", None)
    return result.redacted() if isinstance(result, Rejection) else result


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}", "payload", len(payload))
    if _too_deep(payload):
        return Rejection(f"nested deeper than {MAX_DEPTH} levels", "payload", None)
    try:
        data = json.loads(payload.decode("utf-8"), parse_int=_int, parse_float=_float, parse_constant=_constant)
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
        return Rejection(f"not JSON: {_first_line(err)}", "payload", _excerpt(payload))
    if not isinstance(data, dict):
        return Rejection("expected a JSON object", "payload", data)
    # The id and reply topic are salvaged (if well formed) so a refusal reaches its sender.
    request_id = _salvage_id(data)
    reply_to = _salvage_topic(data)
    name = data.get("command")
    if not isinstance(name, str) or name not in COMMANDS:
        reason = "missing" if "command" not in data else f"unknown command (known: {', '.join(COMMANDS)})"
        return Rejection(reason, "command", name, request_id, None, reply_to)
    try:
        command = _ADAPTER.validate_json(payload)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        loc = [str(p) for p in first["loc"]]
        if loc and loc[0] == name:  # pydantic puts the union tag first
            loc = loc[1:]
        field = ".".join(loc) or "payload"
        value = _sent(data, loc, first.get("input")) if first["type"] != "missing" else None
        reason = first["msg"].removeprefix("Value error, ")
        return Rejection(reason, field[:100], value, request_id, name, reply_to)
    if isinstance(command, BudgetCommand):
        problem = _budget_window(command)
        if problem is not None:
            field, reason = problem
            return Rejection(reason, field, data.get(field), request_id, name, reply_to)
    if isinstance(command, ForceCommand) and (command.device is None) == (command.device_class is None):
        return Rejection("give exactly one of device and class", "device", command.device, request_id, name,
                         reply_to)
    return command


def _too_deep(payload: bytes) -> bool:
    """Whether brackets nest deeper than MAX_DEPTH (outside strings), found in one pass before
    any parser recurses into them."""
    depth = 0
    for match in _STRUCTURE.finditer(payload):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


# A JSON string (with its escapes), or a bracket; strings are matched whole so that brackets
# inside them are skipped.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} digits (at most {MAX_NUMBER_CHARS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def _constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _first_line(err: ValueError) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _excerpt(payload: bytes) -> str:
    """The start of an unreadable payload, for its sender to recognise, unless a word in it
    looks like a credential (``{"password": "hunter2"`` cut short must not be echoed)."""
    text = payload[:60].decode("utf-8", "replace")
    return HIDDEN if any(looks_secret(word) for word in _WORDS.findall(text)) else text


def _sent(data: dict[str, Any], loc: list[str], fallback: Any) -> Any:
    """The refused value as the sender wrote it (``...Z``, not pydantic's ``+00:00``)."""
    value: Any = data
    for key in loc:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return fallback
    return value


def _budget_window(command: BudgetCommand) -> tuple[str, str] | None:
    if command.end is not None and command.duration_seconds is not None:
        return "end", "give end or duration_seconds, not both"
    if command.end is not None:
        start = command.start
        if start is not None and command.end <= start:
            return "end", f"ends before it starts ({start.isoformat()})"
    return None


_ID: TypeAdapter[str] = TypeAdapter(RequestId)


def _salvage_id(data: dict[str, Any]) -> str | None:
    try:
        return _ID.validate_python(data.get("id"), strict=True)
    except ValidationError:
        return None


def _salvage_topic(data: dict[str, Any]) -> str | None:
    value = data.get("reply_to")
    if not isinstance(value, str):
        return None
    try:
        return check_topic(value, what="reply_to")
    except ValueError:
        return None


def check_age(command: Any, now: datetime, *, max_age_seconds: float, required: bool) -> Rejection | None:
    """Refuse a command sent more than ``max_age_seconds`` before ``now`` (or as far ahead of
    it: the sender's clock is wrong), or one without ``sent_at`` where the site requires it."""
    sent_at = getattr(command, "sent_at", None)
    if sent_at is None:
        if required:
            return Rejection("missing: the site file requires sent_at (mqtt.commands.require_sent_at)", "sent_at")
        return None
    age = (now - sent_at).total_seconds()
    if age > max_age_seconds:
        return Rejection(f"sent {age:.0f} s ago, older than mqtt.commands.max_age_seconds ({max_age_seconds:g} s)",
                         "sent_at", sent_at.isoformat())
    if -age > max_age_seconds:
        return Rejection(f"{-age:.0f} s ahead of the daemon's clock (more than {max_age_seconds:g} s): "
                         "check the sender's clock", "sent_at", sent_at.isoformat())
    return None
