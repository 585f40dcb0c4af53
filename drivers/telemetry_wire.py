"""What the daemon and its telemetry workers say to each other (drivers/telemetry_shards.py,
drivers/telemetry_worker.py).

Frames of JSON over a socket pair: a 4-byte length, then the text, each at most
:data:`MAX_FRAME_BYTES`, a frame over it refused before it is read. What a worker sends is plain
values (a reading as its fields, a failure as its kind and detail), so nothing it says can make
the daemon build an object it did not ask for; a reading over :data:`MAX_ROW_BYTES` is sent as
GARBAGE instead, like a miner that answered too much. What a worker identified a miner as is an
:class:`Identity`: enough for the daemon to build the same pyasic object for its commands.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from wattshift.model.miner import CapabilitySource, Failure, MinerCapability, MinerReading, PowerControl

from .base import DeviceError
from .pyasic_backends import backend_of
from .pyasic_import import import_pyasic

MAX_FRAME_BYTES = 1024 * 1024
# A lean answer is at most 256 KiB (cgminer_telemetry.MAX_REPLY_BYTES); a reading is far less.
MAX_ROW_BYTES = 64 * 1024
FRAME_BUDGET_BYTES = MAX_FRAME_BYTES - MAX_ROW_BYTES - 1024  # rows go out in frames up to this
IDS_PER_FRAME = 5_000  # addresses per request frame (each under 64 bytes of JSON)
HEARTBEAT_S = 1.0  # a worker beats this often, busy or not
MAX_LOG_CHARS = 2_000

_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The other end sent something this protocol does not hold."""


# -- frames -------------------------------------------------------------------------------------


def frame(message: Any) -> bytes:
    return frame_text(json.dumps(message, separators=(",", ":")))


def frame_text(text: str) -> bytes:
    data = text.encode()
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {len(data)} bytes is over {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> list[Any] | None:
    """The next message, None where the other end closed; a frame over the bound, or one that
    is not a JSON list with its kind first, is a ProtocolError (and is not read into memory)."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as err:
        if err.partial:
            raise ProtocolError("the link closed inside a frame") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {size} bytes is over {MAX_FRAME_BYTES}")
    try:
        message = json.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise ProtocolError("the link closed inside a frame") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"a frame that is not JSON ({err})") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ProtocolError("a frame that is not a message")
    return message


def row_frames(kind: str, request: int, rows: Iterable[str]) -> Iterator[bytes]:
    """``[kind, request, [row, ...]]`` frames of already-encoded rows, each under the bound."""
    batch: list[str] = []
    size = 0
    for row in rows:
        if batch and size + len(row) > FRAME_BUDGET_BYTES:
            yield frame_text(f'["{kind}",{request},[{",".join(batch)}]]')
            batch, size = [], 0
        batch.append(row)
        size += len(row) + 1
    if batch:
        yield frame_text(f'["{kind}",{request},[{",".join(batch)}]]')


# -- what crosses the link ----------------------------------------------------------------------


def encode_result(device_id: str, result: MinerReading | DeviceError | None) -> str:
    """One miner's answer as a JSON row (None: identified, in a discovery's answer)."""
    if isinstance(result, MinerReading):
        r = result
        row: list[Any] = [device_id, "r", r.model, r.firmware, r.watts, r.limit_watts, r.hashrate_ths, r.mining,
                          r.temperatures_c, r.fans_rpm, r.errors, r.booting]
    elif isinstance(result, DeviceError):
        row = [device_id, "e", str(result.failure), result.detail]
    else:
        row = [device_id, "ok"]
    text = json.dumps(row, separators=(",", ":"))
    if len(text) > MAX_ROW_BYTES:
        detail = f"its reading is {len(text)} bytes of JSON, over the {MAX_ROW_BYTES} a telemetry worker sends"
        text = json.dumps([device_id, "e", str(Failure.GARBAGE), detail])
    return text


def decode_result(row: Any) -> tuple[str, MinerReading | DeviceError | None]:
    try:
        device_id, kind = str(row[0]), row[1]
        if kind == "r":
            model, firmware, watts, limit, hashrate, mining, temps, fans, errors, booting = row[2:]
            return device_id, MinerReading(
                device_id, model, firmware, watts, limit, hashrate, mining,
                tuple(temps), tuple(fans), tuple(errors), bool(booting),
            )
        if kind == "e":
            return device_id, DeviceError(device_id, Failure(row[2]), str(row[3]))
        if kind == "ok" and len(row) == 2:
            return device_id, None
    except (TypeError, ValueError, IndexError) as err:
        raise ProtocolError(f"a row that is not a reading ({type(err).__name__})") from None
    raise ProtocolError(f"a row of an unknown kind {str(kind)[:20]!r}")


# pyasic's BTMiner picks its API (v2 or v3) from the firmware version when the object is built,
# in a class made then; a version after 2024-11 gives v3.
_VERSIONS = (None, "20991231")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a worker identified a miner as: the pyasic class it was built from, the backend that
    gave it (see :data:`_VERSIONS`) and the capability it learned. The daemon builds its own
    driver (for commands) from it without asking the miner."""

    miner_class: str  # "module.QualName" of one of pyasic's MINER_CLASSES
    backend: str | None  # pyasic_backends.backend_of the object built
    capability: MinerCapability

    @classmethod
    def of(cls, miner: Any, capability: MinerCapability) -> Identity:
        """The identity of a pyasic miner object; KeyError where pyasic's factory has no such class."""
        made = type(miner)
        key = f"{made.__module__}.{made.__qualname__}"
        if key not in pyasic_classes():  # made at build time (BTMiner): named after its factory class
            key = _factory_names()[made.__name__]
        return cls(key, backend_of(miner), capability)

    def encode(self) -> list[Any]:
        c = self.capability
        return [self.miner_class, self.backend, str(c.control), c.min_watts, c.max_watts, c.profiles_watts,
                c.can_sleep, str(c.source)]

    @classmethod
    def decode(cls, raw: Any) -> Identity:
        try:
            name, backend, control, low, high, profiles, can_sleep, source = raw
            capability = MinerCapability(PowerControl(control), float(low), float(high),
                                         tuple(float(p) for p in profiles), bool(can_sleep), CapabilitySource(source))
        except (TypeError, ValueError) as err:
            raise ProtocolError(f"an identity that is not one ({type(err).__name__})") from None
        return cls(str(name), None if backend is None else str(backend), capability)

    def build(self, address: str) -> Any:
        """A new pyasic miner object like the worker's, at ``address``; LookupError for a class
        pyasic's factory does not list (only its own classes are ever built)."""
        factory_class = pyasic_classes()[self.miner_class]
        for version in _VERSIONS:
            miner = factory_class(address, version)
            if backend_of(miner) == self.backend:
                return miner
        raise LookupError(f"{self.miner_class} builds no {self.backend}")


@functools.cache
def pyasic_classes() -> dict[str, type]:
    """Every class pyasic's factory builds, by "module.QualName" (some are made at import, in no
    module of their own, so they are found here rather than by import path)."""
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    classes = [c for by_model in factory.MINER_CLASSES.values() for c in by_model.values()]
    classes.append(factory.UnknownMiner)
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


@functools.cache
def _factory_names() -> dict[str, str]:
    return {c.__name__: key for key, c in pyasic_classes().items()}
