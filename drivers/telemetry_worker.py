"""A telemetry worker process: the daemon's own :class:`~.pyasic_fleet.MinerFleet` over a share of
the site's miners, on an event loop of its own, answering the daemon over a socket
(drivers/telemetry_shards.py says why and how; the daemon starts it as
``python -m wattshift.drivers.telemetry_worker FD``).

It reads and identifies exactly as a daemon polling in its own process does, because it is the
same fleet: the answer gap, the read left in flight for the next request, identification retried
after failures and again after lost reads. With its answers it sends what each miner was
identified as, once per change, so the daemon can command the miner itself. It ends when the
daemon says stop or when the link closes (the daemon is gone): it never outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .pyasic_fleet import FleetSettings, MinerFleet, MinerTarget
from .pyasic_import import import_pyasic
from .pyasic_miner import Deadlines, PyasicMiner
from .telemetry_wire import (
    HEARTBEAT_S,
    MAX_LOG_CHARS,
    MAX_ROW_BYTES,
    Identity,
    ProtocolError,
    encode_result,
    frame,
    read_frame,
    row_frames,
)

log = logging.getLogger(__name__)


class _Link:
    """The worker's end: frames out in order, on the loop's thread."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()

    def send(self, frames: Iterable[bytes]) -> None:
        for data in frames:
            self._writer.write(data)

    def send_soon(self, data: bytes) -> None:
        """From any thread (a log record may come from one); nothing once the loop has ended."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._writer.write, data)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        """After what was sent has gone; the daemon then sees the link close."""
        self._writer.close()


class _Forward(logging.Handler):
    """Log records go to the daemon's log, so a miner going away is logged once, as in-process."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)[:MAX_LOG_CHARS]
            self._link.send_soon(frame(["log", record.levelno, record.name, text]))
        except Exception:  # a record that cannot be sent must not stop the reads
            self.handleError(record)


class Worker:
    def __init__(self, fleet: MinerFleet, link: _Link) -> None:
        self.fleet = fleet
        self.link = link
        self.reported: dict[str, PyasicMiner] = {}  # the driver each miner's identity was sent for
        self.failed = False

    def identities(self) -> None:
        """Send what changed since the last time: a miner identified (again), or one dropped."""
        rows = []
        for device_id in self.fleet.device_ids:
            driver = self.fleet.driver(device_id)
            if driver is self.reported.get(device_id):
                continue
            if driver is None:
                del self.reported[device_id]
                rows.append(json.dumps([device_id, None]))
            else:
                self.reported[device_id] = driver  # sent, or warned about, once
                try:
                    identity = Identity.of(driver.pyasic_miner, driver.capability)
                except KeyError:  # not a class of pyasic's factory: the daemon could not build it
                    log.warning("%s: %s is no class of pyasic's factory; the daemon cannot command it",
                                device_id, type(driver.pyasic_miner).__name__)
                    continue
                rows.append(json.dumps([device_id, identity.encode()]))
        self.link.send(row_frames("ident", 0, (r for r in rows if len(r) <= MAX_ROW_BYTES)))

    async def answer(self, request: int, kind: str, device_ids: Sequence[str], args: list[Any]) -> None:
        results: dict[str, Any]
        try:
            if kind == "read":
                gap = args[0] if args else None
                results = dict(await self.fleet.read(device_ids, answer_gap_s=gap))
            else:
                found = await self.fleet.discover()
                results = {d: found[d] if not isinstance(found[d], PyasicMiner) else None for d in device_ids}
        except Exception:
            # The fleet turns every miner's failure into a DeviceError: this is a bug. In the
            # daemon's own process it would end the tick; here it ends the worker, and the
            # daemon starts another.
            log.exception("a %s of %d miners raised; this telemetry worker stops", kind, len(device_ids))
            self.failed = True
            self.link.close()
            return
        self.identities()  # before the answers that need them
        self.link.send(row_frames("part", request, (encode_result(d, r) for d, r in results.items())))
        self.link.send([frame(["done", request])])
        await self.link.drain()

    async def beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.identities()
            self.link.send([frame(["beat"])])


async def serve(fd: int) -> bool:
    """Answer the daemon until it says stop or goes; False where a request failed."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    link = _Link(writer)
    targets: list[MinerTarget] = []
    while True:
        message = await read_frame(reader)
        if message is None:
            return True  # the daemon went before it said what to read
        if message[0] == "targets":
            targets.extend(MinerTarget(**t) for t in message[1])
        elif message[0] == "start":
            _, raw, level = message
            settings = FleetSettings(**{**raw, "deadlines": Deadlines(**raw["deadlines"])})
            break
        else:
            raise ProtocolError(f"{message[0]!r} before start")
    root = logging.getLogger()
    root.handlers[:] = [_Forward(link)]
    root.setLevel(level)
    import_pyasic()  # seconds on a loaded machine: before "ready", so no read waits for it
    worker = Worker(MinerFleet(targets, settings), link)
    link.send([frame(["ready"])])
    beat = asyncio.create_task(worker.beat())
    answers: set[asyncio.Task[None]] = set()
    asked: dict[int, list[str]] = {}
    try:
        while (message := await read_frame(reader)) is not None and message[0] != "stop":
            kind = message[0]
            if kind == "ids":
                asked.setdefault(message[1], []).extend(message[2])
            elif kind in ("read", "discover"):
                task = asyncio.create_task(worker.answer(message[1], kind, asked.pop(message[1], []), message[2:]))
                answers.add(task)
                task.add_done_callback(answers.discard)
            else:
                raise ProtocolError(f"a message of an unknown kind {str(kind)[:20]!r}")
    finally:
        beat.cancel()
        for task in list(answers):
            task.cancel()
        await asyncio.gather(beat, *answers, return_exceptions=True)
        await worker.fleet.close()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return not worker.failed


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    # Ctrl-C reaches the whole process group; the daemon stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0 if asyncio.run(serve(int(argv[0]))) else 1


if __name__ == "__main__":
    sys.exit(main())
