"""The CGMiner-style JSON API on TCP 4028, as LuxOS, Braiins OS+ and Whatsminer speak it.

The wire, as pyasic uses it: the client sends one JSON object (``{"command": "a+b",
"parameter": "..."}``) and reads until EOF, so the server answers once and closes. Multicommands
arrive as ``"a+b+c"`` and are answered as ``{"a": [{...}], "b": [{...}]}``. ``STATUS`` must be
``"S"`` or ``"I"`` for pyasic to accept an answer.

A firmware plugs in a :class:`Handler`: one function from the decoded request to the reply.
:func:`dispatch_commands` builds one from ``api_<command>`` methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .listener import TcpListener
from .miner import Fault, SimulatedMiner

Reply = dict[str, Any] | bytes
Handler = Callable[[dict[str, Any]], Awaitable[Reply]]

GARBAGE = b"\x00\xff<html>502 Bad Gateway</html>{{{"
MAX_REQUEST_BYTES = 64 * 1024


def status(code: int, msg: str, *, ok: bool = True, description: str = "sim") -> list[dict[str, Any]]:
    """A CGMiner STATUS section; ``ok=False`` gives the ``"E"`` status firmwares use for errors."""
    return [
        {
            "STATUS": "S" if ok else "E",
            "When": int(time.time()),
            "Code": code,
            "Msg": msg,
            "Description": description,
        }
    ]


async def dispatch_commands(target: object, request: dict[str, Any]) -> dict[str, Any]:
    """Answer ``request`` from ``target.api_<command>(parameter)`` methods, multicommands too.

    A method may be sync or async and returns the whole reply object of that command (with its
    ``STATUS``). Unknown commands get the CGMiner "Invalid command" error.
    """
    command = str(request.get("command", ""))
    parameter = request.get("parameter")
    names = command.split("+")
    replies = {name: await _call(target, name, parameter) for name in names}
    if len(names) == 1:
        return replies[command]
    return {name: [reply] for name, reply in replies.items()}


async def _call(target: object, name: str, parameter: Any) -> dict[str, Any]:
    method = getattr(target, f"api_{name}", None)
    if method is None:
        return {"STATUS": status(14, "Invalid command", ok=False), "id": 1}
    reply = method(parameter)
    if asyncio.iscoroutine(reply):
        reply = await reply
    return reply


class CgminerServer(TcpListener):
    """One TCP listener that plays the miner's faults and answers through a :class:`Handler`."""

    def __init__(self, miner: SimulatedMiner, handler: Handler, *, port: int = 4028) -> None:
        super().__init__(miner, port)
        self.handler = handler

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.miner.reachable:
            _reset(writer)
            return
        request = await read_json_object(reader)
        if request is None:
            return
        if self.miner.fault is Fault.HANG:
            await asyncio.Event().wait()  # until stop() cancels us
        if self.miner.fault is Fault.GARBAGE:
            writer.write(GARBAGE)
        else:
            reply = await self.handler(request)
            writer.write(reply if isinstance(reply, bytes) else json.dumps(reply).encode())
        await writer.drain()


async def read_json_object(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read until the bytes so far parse as one JSON object (clients don't half-close)."""
    buffer = b""
    while len(buffer) < MAX_REQUEST_BYTES:
        chunk = await reader.read(4096)
        if not chunk:
            break
        buffer += chunk
        try:
            decoded = json.loads(buffer)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        return decoded if isinstance(decoded, dict) else None
    return None


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset, the way a dead host's stack answers."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()
