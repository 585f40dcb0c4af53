"""Turning what pyasic does when a miner misbehaves into one :class:`Failure`.

pyasic reports trouble in several ways, and not the same way on every backend:

- a connection refused on connect comes back as an *empty answer* (``{}``), not an error, so
  reads return all-None data and LuxOS commands return ``False``;
- a connection reset after connect escapes as ``ConnectionResetError``;
- bytes that are not JSON are swallowed into all-None data on reads, and raise from
  ``get_miner`` (``UnicodeDecodeError``) when they are not UTF-8;
- an error ``STATUS`` raises ``APIError`` or returns ``False``, depending on the backend;
- nothing bounds a call: no connect timeout and a 100 s read timeout.

So every call gets its own deadline (:func:`within`), and when a call fails in a way that does
not say why, the miner is probed directly (:func:`probe`): not there (NO_ANSWER), silent
(TIMEOUT), answering bytes that are not its protocol (GARBAGE), or healthy, in which case the
failure was the miner's answer to us (REFUSED for a command, GARBAGE for a read).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Awaitable
from typing import Any, TypeVar

from wattshift.model.miner import Failure

from .base import DeviceError

T = TypeVar("T")

CGMINER_PORT = 4028
CGMINER_PROBE = b'{"command":"version"}'
# Whatsminer API v3: JSON framed by a 4-byte little-endian length, both ways.
BTMINER_V3_PORT = 4433
_V3_REQUEST = b'{"cmd":"get.device.info","param":"salt"}'
BTMINER_V3_PROBE = struct.pack("<I", len(_V3_REQUEST)) + _V3_REQUEST
MAX_V3_FRAME = 64 * 1024


async def within(device_id: str, action: str, call: Awaitable[T], seconds: float) -> T:
    """Await one pyasic call under its own deadline; connection failures become DeviceError.

    Anything else the call raises is left to the caller, which knows whether it was reading
    or commanding and so what a healthy miner's failure means.
    """
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        failure, detail = Failure.TIMEOUT, f"{action}: no answer within {seconds:g} s"
    except OSError as err:  # ConnectionRefusedError, ConnectionResetError, unreachable network...
        failure, detail = Failure.NO_ANSWER, f"{action}: {_describe(err)}"
    # Raised outside the handlers on purpose: a chained exception would keep pyasic's frames,
    # and the sockets they hold, alive for as long as anyone keeps this error.
    raise DeviceError(device_id, failure, detail)


def probe_port(miner: Any) -> int:
    """The port to probe a pyasic miner on: its RPC API (CGMiner, 4028) where it has one."""
    rpc = getattr(miner, "rpc", None)
    if rpc is not None:
        return int(rpc.port)
    return int(getattr(getattr(miner, "web", None), "port", CGMINER_PORT))


async def probe(host: str, port: int, seconds: float) -> tuple[Failure | None, str]:
    """Ask the miner directly whether it is there and speaking its protocol.

    Returns ``(None, what was seen)`` for a healthy miner. On the CGMiner port (every firmware
    we drive has one) a ``version`` request must come back as JSON with a ``STATUS``; on the
    Whatsminer API v3 port, ``get.device.info`` as a framed JSON object with a ``code``; on any
    other port only the connection can be judged.
    """
    framed = port == BTMINER_V3_PORT
    request = CGMINER_PROBE if port == CGMINER_PORT else BTMINER_V3_PROBE if framed else b""
    try:
        async with asyncio.timeout(seconds):
            answer = await (_exchange_framed(host, port, request) if framed else exchange(host, port, request))
    except TimeoutError:
        return Failure.TIMEOUT, f"port {port} accepted and then said nothing for {seconds:g} s"
    except OSError as err:
        return Failure.NO_ANSWER, f"port {port}: {_describe(err)}"
    if request and not answer:
        return Failure.NO_ANSWER, f"port {port} closed the connection without a word"
    if request and not (_is_v3_reply(answer) if framed else _is_cgminer_reply(answer)):
        return Failure.GARBAGE, f"port {port} answered {answer[:40]!r}"
    return None, f"port {port} answers"


async def diagnose(
    device_id: str, action: str, symptom: str, *, port: int, healthy: Failure, seconds: float
) -> DeviceError:
    """The DeviceError for a failed call: what a probe of ``device_id`` finds, else ``healthy``."""
    failure, seen = await probe(device_id, port, seconds)
    return DeviceError(device_id, failure or healthy, f"{action}: {symptom} ({seen})")


async def exchange(host: str, port: int, request: bytes, *, max_bytes: int | None = None) -> bytes:
    """Send ``request`` (if any) and read until the miner closes, as CGMiner answers.

    The caller's deadline bounds a peer that never stops; ``max_bytes`` bounds one that sends
    too much (the answer is then cut there, and will not parse)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if not request:
            return b""
        writer.write(request)
        await writer.drain()
        if max_bytes is None:
            return await reader.read()  # to EOF
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes and (chunk := await reader.read(65536)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _exchange_framed(host: str, port: int, request: bytes) -> bytes:
    """Send one framed request and read one framed answer (what came, if it was cut short)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        header = await reader.readexactly(4)
        (length,) = struct.unpack("<I", header)
        if length > MAX_V3_FRAME:
            return header  # no frame of this API is that long: not its protocol
        return header + await reader.readexactly(length)
    except asyncio.IncompleteReadError as cut:
        return cut.partial
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _is_v3_reply(raw: bytes) -> bool:
    if len(raw) < 4 or struct.unpack("<I", raw[:4])[0] != len(raw) - 4:
        return False
    try:
        decoded = json.loads(raw[4:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(decoded, dict) and "code" in decoded


def _is_cgminer_reply(raw: bytes) -> bool:
    try:
        decoded = json.loads(raw.rstrip(b"\x00").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(decoded, dict) and "STATUS" in decoded


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
