"""Commands that arrive on ``<prefix>/cmd``: their JSON shapes and their validation (pure).

One topic, one JSON object per message, ``command`` says which. Every command may carry an
``id`` (the reply goes to ``<prefix>/reply/<id>``) and a ``reply_to`` topic (used instead);
an MQTT 5 response topic and correlation data on the message win over both.

A message that is not JSON, names no known command, or has a field out of range becomes a
:class:`Rejection` that names the field, the value and the reason; nothing is applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from .journal_entries import looks_secret
from .mqtt_config import check_topic

RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
EventName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
MAX_PAYLOAD_BYTES = 16_384
MAX_DURATION = timedelta(days=31)


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RequestId | None = None
    reply_to: str | None = Field(default=None, max_length=1024)

    @field_validator("reply_to")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, what="reply_to")


class BudgetCommand(_Command):
    """Lower the site budget to ``limit_kw`` from ``start`` (default now) to ``end`` or for
    ``duration_seconds`` (default: until restored). A curtailment event named ``name``."""

    command: Literal["budget"]
    limit_kw: float = Field(ge=0, le=10_000_000)
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
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

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    command: Literal["force"]
    device: str | None = Field(default=None, min_length=1, max_length=253)
    device_class: Literal["miner", "gpu"] | None = Field(default=None, alias="class")
    state: Literal["on", "off", "auto"]
    until: AwareDatetime | None = None


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
        """Without the value when the field looks like a credential: replies and the journal
        are read by many, and a password sent to the wrong place must not spread further."""
        if self.field is not None and looks_secret(self.field.split(".")[-1]):
            return replace(self, value="(hidden)")
        return self

    def message(self) -> str:
        if self.field is None:
            return self.reason
        return f"{self.field}={_show(self.value)}: {self.reason}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def parse_command(payload: bytes) -> Any:
    """A validated command model, or a :class:`Rejection` (never raises on bad input)."""
    result = _parse(payload)
    return result.redacted() if isinstance(result, Rejection) else result


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}", "payload", len(payload))
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return Rejection(f"not JSON: {err}", "payload", payload[:60].decode("utf-8", "replace"))
    if not isinstance(data, dict):
        return Rejection("expected a JSON object", "payload", data)
    # The id and reply topic are salvaged (if well formed) so a refusal reaches its sender.
    request_id = _salvage(data, "id", RequestId)
    reply_to = _salvage_topic(data)
    name = data.get("command")
    if name not in COMMANDS:
        reason = "missing" if "command" not in data else f"unknown command (known: {', '.join(COMMANDS)})"
        return Rejection(reason, "command", name, request_id, None, reply_to)
    try:
        command = _ADAPTER.validate_python(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        loc = [str(p) for p in first["loc"]]
        if loc and loc[0] == name:  # pydantic puts the union tag first
            loc = loc[1:]
        field = ".".join(loc) or "payload"
        value = first.get("input") if first["type"] != "missing" else None
        return Rejection(first["msg"], field, value, request_id, name, reply_to)
    if isinstance(command, BudgetCommand):
        problem = _budget_window(command)
        if problem is not None:
            return Rejection(problem[1], problem[0], problem[2], request_id, name, reply_to)
    if isinstance(command, ForceCommand) and (command.device is None) == (command.device_class is None):
        return Rejection("give exactly one of device and class", "device", command.device, request_id, name,
                         reply_to)
    return command


def _budget_window(command: BudgetCommand) -> tuple[str, str, Any] | None:
    if command.end is not None and command.duration_seconds is not None:
        return "end", "give end or duration_seconds, not both", command.end.isoformat()
    if command.end is not None:
        start = command.start
        if start is not None and command.end <= start:
            return "end", f"ends before it starts ({start.isoformat()})", command.end.isoformat()
    return None


def _salvage(data: dict[str, Any], key: str, kind: Any) -> Any:
    try:
        return TypeAdapter(kind).validate_python(data.get(key))
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
