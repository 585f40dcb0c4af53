"""What a ``wattshift agent`` on a GPU host and the controller say to each other over MQTT.

The agent owns its host's NVML; the controller drives it through these messages. Both sides
parse every message with the strict models below (no coercion, unknown keys refused, every
string and list bounded) after checking its size, so a message from anyone else on the
broker can be refused with a reason and change nothing.

Topics, under a prefix (default ``wattshift/agents``) and one level per host::

    <prefix>/<host>/availability   online | offline (retained; offline is the agent's last will)
    <prefix>/<host>/readings       Readings, JSON (retained, at most one per publish interval)
    <prefix>/<host>/cmd            Command in: cap, job or heartbeat (never retained)
    <prefix>/<host>/reply          Reply to each command, by its id (not retained)

Times on the wire (``at``, ``sent_at``) are Unix seconds of the sender's wall clock; each side
compares them with its own clock only to refuse messages too far off (skew), never to order
events across hosts: a cap is confirmed by a reading whose ``at`` is later than the agent's own
reply ``at`` (one clock), and received by the controller after the reply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from wattshift.model.fields import NAME_PATTERN
from wattshift.model.gpu import GpuLimits, GpuReading
from wattshift.model.jobs import JobState
from wattshift.model.miner import Failure

from .base import DeviceError

PROTOCOL: Literal[1] = 1
DEFAULT_PREFIX = "wattshift/agents"
ONLINE = b"online"
OFFLINE = b"offline"
# A host of 64 cards with 64 processes each fits in 64 KiB with room to spare; a command is a
# few hundred bytes. Anything larger is refused before it is parsed.
MAX_READINGS_BYTES = 64 * 1024
MAX_COMMAND_BYTES = 2048
MAX_REPLY_BYTES = 4096
MAX_CARDS = 64
MAX_PROCESSES = 64
MAX_DETAIL = 300
MAX_JOBS = 64

Host = Annotated[str, Field(pattern=NAME_PATTERN)]
Uuid = Annotated[str, Field(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9-]+$")]
RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Watts = Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]
UnixTime = Annotated[float, Field(gt=0, lt=1e11, allow_inf_nan=False)]
Detail = Annotated[str, Field(max_length=MAX_DETAIL)]
# A job id as the host's runner gives it; never a "/" (the controller writes "<host>/<job id>").
JobId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@+-]+$")]
JobAction = Literal["start", "suspend", "resume", "requeue", "stop"]


class Wire(BaseModel):
    """Strict: unknown keys, wrong types (a string for a number, a bool for an int) refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CardLimits(Wire):
    min_watts: Watts
    max_watts: Watts
    default_watts: Watts


class CardError(Wire):
    failure: Failure
    detail: Detail


class Card(Wire):
    """One card as read, or ``error`` when it could not be (then the other fields are empty)."""

    uuid: Uuid
    index: int = Field(ge=0, lt=MAX_CARDS)
    model: Annotated[str, Field(max_length=96)] | None = None
    watts: Watts | None = None
    limit_watts: Watts | None = None
    enforced_limit_watts: Watts | None = None
    limits: CardLimits | None = None
    energy_joules: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    utilisation_pct: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    temperature_c: Annotated[float, Field(ge=-50, le=200, allow_inf_nan=False)] | None = None
    processes: Annotated[list[Annotated[int, Field(ge=0, lt=2**32)]], Field(max_length=MAX_PROCESSES)] = []
    cap_settable: bool = True
    error: CardError | None = None


class Job(Wire):
    """A job on the host's own runner (``jobs:`` in the agent file), as its status says."""

    job_id: JobId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    state: JobState
    gpus: int = Field(default=0, ge=0, le=MAX_CARDS)


class Readings(Wire):
    v: Literal[1]
    host: Host
    at: UnixTime  # when this reading was taken (agent clock)
    seq: int = Field(ge=0)
    # True once the agent moved its cards to its safe cap because the controller went silent.
    safe_cap: bool = False
    gpus: Annotated[list[Card], Field(max_length=MAX_CARDS)]
    # The host's jobs (None: the agent runs no job runner); jobs_error: its runner could not be asked.
    jobs: Annotated[list[Job], Field(max_length=MAX_JOBS)] | None = None
    jobs_error: Detail | None = None


class CapCommand(Wire):
    v: Literal[1]
    command: Literal["cap"]
    id: RequestId
    host: Host
    sent_at: UnixTime
    uuid: Uuid
    watts: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]


class Heartbeat(Wire):
    """The controller is alive and reading this host: the agent's silence timer restarts."""

    v: Literal[1]
    command: Literal["heartbeat"]
    id: RequestId
    host: Host
    sent_at: UnixTime


class JobCommand(Wire):
    """Move a job on the host's runner: the lever on AI work the agent holds besides the caps."""

    v: Literal[1]
    command: Literal["job"]
    id: RequestId
    host: Host
    sent_at: UnixTime
    action: JobAction
    job_id: JobId


Command = Annotated[CapCommand | JobCommand | Heartbeat, Field(discriminator="command")]
COMMAND = TypeAdapter(Command)


class Reply(Wire):
    v: Literal[1]
    host: Host
    id: RequestId | None  # None: the command was too broken to carry a usable id
    status: Literal["ok", "failed", "refused"]
    at: UnixTime  # after the set and its read-back (agent clock)
    uuid: Uuid | None = None
    job_id: JobId | None = None
    held_watts: Watts | None = None
    enforced_watts: Watts | None = None
    failure: Annotated[str, Field(max_length=32)] | None = None
    detail: Detail | None = None


@dataclass(frozen=True, slots=True)
class AgentTopics:
    prefix: str
    host: str

    @property
    def availability(self) -> str:
        return f"{self.prefix}/{self.host}/availability"

    @property
    def readings(self) -> str:
        return f"{self.prefix}/{self.host}/readings"

    @property
    def command(self) -> str:
        return f"{self.prefix}/{self.host}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.prefix}/{self.host}/reply"


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(host, kind)`` of a topic under ``prefix`` (kind: availability, readings, reply, cmd)."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 2 or parts[1] not in ("availability", "readings", "reply", "cmd"):
        return None
    return parts[0], parts[1]


class WireError(ValueError):
    """A message refused: too large, not JSON, or not the schema; the text says which field."""


M = TypeVar("M", bound=Wire)


def _parse(model: type[M], payload: bytes, limit: int) -> M:
    if len(payload) > limit:
        raise WireError(f"{len(payload)} bytes, over the {limit} allowed")
    try:
        return model.model_validate_json(payload)
    except ValidationError as err:
        raise WireError(_first_problem(err)) from None


def parse_readings(payload: bytes) -> Readings:
    return _parse(Readings, payload, MAX_READINGS_BYTES)


def parse_reply(payload: bytes) -> Reply:
    return _parse(Reply, payload, MAX_REPLY_BYTES)


def parse_command(payload: bytes) -> CapCommand | JobCommand | Heartbeat:
    if len(payload) > MAX_COMMAND_BYTES:
        raise WireError(f"{len(payload)} bytes, over the {MAX_COMMAND_BYTES} allowed")
    try:
        return COMMAND.validate_json(payload)
    except ValidationError as err:
        raise WireError(_first_problem(err)) from None


def _first_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    return f"{where}: {first['msg']}"


def encode(message: Wire) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


# --- the driver's vocabulary on the wire and back ------------------------------------------------


def card_out(reading: GpuReading | DeviceError, uuid: str, index: int) -> Card:
    """One card for the wire, from what the NVML driver gave."""
    if isinstance(reading, DeviceError):
        return Card(uuid=uuid, index=max(index, 0),
                    error=CardError(failure=reading.failure, detail=reading.detail[:MAX_DETAIL]))
    limits = reading.limits
    return Card(
        uuid=uuid, index=max(reading.index, 0), model=(reading.model or "")[:96] or None,
        watts=_finite(reading.watts), limit_watts=_finite(reading.limit_watts),
        enforced_limit_watts=_finite(reading.enforced_limit_watts),
        limits=CardLimits(min_watts=limits.min_watts, max_watts=limits.max_watts,
                          default_watts=limits.default_watts) if limits is not None else None,
        energy_joules=_finite(reading.energy_joules), utilisation_pct=_finite(reading.utilisation_pct),
        temperature_c=_finite(reading.temperature_c), processes=list(reading.processes[:MAX_PROCESSES]),
        cap_settable=reading.cap_settable,
    )


def card_in(card: Card, device_id: str) -> GpuReading | DeviceError:
    """What the controller's loop sees of one card."""
    if card.error is not None:
        return DeviceError(card.uuid, card.error.failure, f"agent {device_id}: {card.error.detail}")
    limits = card.limits
    return GpuReading(
        uuid=card.uuid, index=card.index, model=card.model, watts=card.watts, limit_watts=card.limit_watts,
        enforced_limit_watts=card.enforced_limit_watts,
        limits=GpuLimits(limits.min_watts, limits.max_watts, limits.default_watts) if limits else None,
        energy_joules=card.energy_joules, utilisation_pct=card.utilisation_pct, temperature_c=card.temperature_c,
        processes=tuple(card.processes), cap_settable=card.cap_settable,
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
