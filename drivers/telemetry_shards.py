"""Telemetry polled by worker processes, each owning every n-th miner of the site.

One process polls some 10,000 miners a cycle on one core (benchmarks/telemetry_cycle.py); a site
with more cores splits the polling (``drivers.telemetry_workers`` in the site file). Each worker
is a fresh interpreter (``python -m wattshift.drivers.telemetry_worker``: spawned, never a fork
of a daemon that has an event loop and threads running) and runs the daemon's own
:class:`~.pyasic_fleet.MinerFleet` over its share, on its own event loop: the same
identification, lean reader or pyasic driver, deadlines and answer gap per miner as a daemon
polling in its own process. Only telemetry moves. Every command stays in the daemon, on pyasic:
a worker sends back, with its readings, what it identified each miner as (the pyasic class and
the capability it learned), and the daemon builds its own driver from that without a request
to the miner (:class:`Identity`), so each miner is identified once, by the process that polls it.

Parent and worker speak over a socket pair in bounded frames of JSON (drivers/telemetry_wire.py).

A worker beats every second while it polls. One whose process ends, whose link closes, that
sends nothing for ``worker_hang_s`` or breaks the protocol is down: it is killed if it still
runs, its miners read as NO_ANSWER for as long (the loop counts them at their worst case and
sends them nothing), it is logged once, and it is started again after ``worker_restart_s``,
doubling up to a minute while it keeps failing (once it has run for a minute, from the start).
A worker whose read raised what no miner should make it raise logs why and stops: a bug is not
hidden behind readings. A restarted worker identifies its miners before it takes reads again. A
worker whose daemon is gone finds its link closed and exits; ``close`` stops every worker and
waits for it (kills it after a few seconds), so none outlives the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from wattshift.model.miner import Failure, MinerReading

from .base import DeviceError
from .telemetry_wire import IDS_PER_FRAME, MAX_LOG_CHARS, Identity, ProtocolError, decode_result, frame, read_frame

if TYPE_CHECKING:
    from .pyasic_fleet import FleetSettings, MinerTarget

log = logging.getLogger(__name__)

WORKER_MODULE = "wattshift.drivers.telemetry_worker"
START_S = 60.0  # a fresh interpreter imports wattshift and pyasic: seconds on a loaded machine
STOP_S = 5.0  # a stopping worker cancels its reads; then it is killed
RESTART_MAX_S = 60.0


# -- the daemon's side --------------------------------------------------------------------------

Answers = dict[str, MinerReading | DeviceError | None]
TARGETS_PER_FRAME = 2_000  # each under 300 bytes of JSON


class ShardLost(Exception):
    """The worker went down while a request was out."""


class _Shard:
    """One worker process and its link, as the daemon sees it."""

    def __init__(self, index: int, count: int, targets: list[MinerTarget]) -> None:
        self.index, self.targets = index, targets
        self.ids = frozenset(t.address for t in targets)
        self.name = f"telemetry worker {index + 1} of {count}"
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()  # said it has built its fleet
        self.up = False  # takes reads
        self.settled = asyncio.Event()  # its first start ended, either way
        self.why_down = "starting"
        self.requests: dict[int, tuple[Answers, asyncio.Future[None]]] = {}
        self.up_since: float | None = None  # loop time it came up, in this life
        self.down_logged = False

    def down_error(self, device_id: str) -> DeviceError:
        return DeviceError(device_id, Failure.NO_ANSWER, f"{self.name} is {self.why_down}")

    async def send(self, frames: Iterable[bytes]) -> None:
        writer = self.writer
        if writer is None:
            raise ShardLost(f"{self.name} is {self.why_down}")
        for data in frames:
            writer.write(data)
        try:
            await writer.drain()
        except OSError as err:
            raise ShardLost(f"{self.name}: its link broke ({err})") from None

    async def ask(self, request_id: int, kind: str, device_ids: Sequence[str], *args: Any) -> Answers:
        """One request, its addresses in frames of their own; the answers once it is done."""
        answers: Answers = {}
        done = asyncio.get_running_loop().create_future()
        self.requests[request_id] = (answers, done)
        try:
            asks = (frame(["ids", request_id, list(device_ids[i:i + IDS_PER_FRAME])])
                    for i in range(0, len(device_ids), IDS_PER_FRAME))
            await self.send([*asks, frame([kind, request_id, *args])])
            await done
            return answers
        finally:
            self.requests.pop(request_id, None)

    def lose_requests(self) -> None:
        for _, done in self.requests.values():
            if not done.done():
                done.set_exception(ShardLost(f"{self.name} went {self.why_down}"))


class ShardedTelemetry:
    """Reads miners through ``workers`` processes; ``on_identity(device_id, identity | None)`` is
    called (before the answers that need it) whenever a worker's driver for a miner changes."""

    def __init__(
        self,
        targets: Sequence[MinerTarget],
        settings: FleetSettings,
        workers: int,
        on_identity: Callable[[str, Identity | None], None],
    ) -> None:
        count = max(1, min(workers, len(targets)))
        # The site's concurrency bound holds for the site: each worker gets its share of it.
        share = math.ceil(settings.concurrency / count)
        self._settings = replace(settings, concurrency=share, telemetry_workers=0)
        self._hang_s, self._restart_s = settings.worker_hang_s, settings.worker_restart_s
        # Every n-th miner in site-file order: a miner stays with its worker across restarts.
        self._shards = [_Shard(i, count, list(targets[i::count])) for i in range(count)] if targets else []
        self._owner = {device_id: shard for shard in self._shards for device_id in shard.ids}
        self._identities: dict[str, Identity] = {}
        self._on_identity = on_identity
        self._supervisors: list[asyncio.Task[None]] = []
        self._request_ids = itertools.count(1)
        self._closing = False

    @property
    def worker_pids(self) -> list[int | None]:
        """The process id of each worker now running (None: down)."""
        return [s.process.pid if s.process is not None and s.process.returncode is None else None
                for s in self._shards]

    async def discover(self) -> Answers:
        """Every worker identifies its miners: None per miner identified, else its DeviceError."""
        await self._started()
        return await self._each("discover", list(self._owner))

    async def read(
        self, device_ids: Sequence[str], *, answer_gap_s: float | None = None
    ) -> dict[str, MinerReading | DeviceError]:
        await self._started()
        answers = await self._each("read", device_ids, answer_gap_s)
        results: dict[str, MinerReading | DeviceError] = {}
        for device_id in device_ids:
            answer = answers.get(device_id)
            if answer is None:
                answer = DeviceError(device_id, Failure.NO_ANSWER, "its telemetry worker sent no reading")
            results[device_id] = answer
        return results

    async def close(self) -> None:
        """Stop every worker and wait for each to end; kill those that do not."""
        self._closing = True
        for shard in self._shards:
            with contextlib.suppress(ShardLost):
                await shard.send([frame(["stop"])])
        for shard, task in zip(self._shards, self._supervisors, strict=False):
            if shard.writer is None:
                task.cancel()  # waiting to restart, or starting: nothing to say stop to
        if self._supervisors:
            _, late = await asyncio.wait(self._supervisors, timeout=STOP_S)
            for task in late:
                task.cancel()  # kills and reaps its process on the way out
            await asyncio.gather(*self._supervisors, return_exceptions=True)
        self._supervisors.clear()

    # -- internals ------------------------------------------------------------------------------

    async def _started(self) -> None:
        if self._closing:
            raise RuntimeError("the telemetry workers are closed")
        if not self._supervisors:
            self._supervisors = [asyncio.create_task(self._supervise(s), name=s.name) for s in self._shards]
        await asyncio.gather(*(s.settled.wait() for s in self._shards))

    async def _each(self, kind: str, device_ids: Sequence[str], *args: Any) -> Answers:
        wanted: dict[_Shard, list[str]] = {}
        answers: Answers = {}
        for device_id in device_ids:
            shard = self._owner.get(device_id)
            if shard is None:
                answers[device_id] = DeviceError(device_id, Failure.UNIDENTIFIED, "not a miner of this site")
            else:
                wanted.setdefault(shard, []).append(device_id)
        for part in await asyncio.gather(*(self._ask(s, kind, ids, *args) for s, ids in wanted.items())):
            answers.update(part)
        return answers

    async def _ask(self, shard: _Shard, kind: str, device_ids: list[str], *args: Any) -> Answers:
        if not shard.up:
            return {d: shard.down_error(d) for d in device_ids}
        try:
            return await shard.ask(next(self._request_ids), kind, device_ids, *args)
        except ShardLost as err:
            return {d: DeviceError(d, Failure.NO_ANSWER, str(err)) for d in device_ids}

    async def _supervise(self, shard: _Shard) -> None:
        """Run the worker; whenever it goes down, start it again after a growing wait."""
        wait = self._restart_s
        restart = False
        while not self._closing:
            try:
                await self._life(shard, restart)
            except Exception as err:  # a bug here must not end the supervision: the worker restarts
                log.exception("%s: its link failed", shard.name)
                shard.why_down = f"down ({err!r})"
            if self._closing:
                return
            restart = True
            up_since, now = shard.up_since, asyncio.get_running_loop().time()
            if up_since is not None and now - up_since >= RESTART_MAX_S:
                wait = self._restart_s  # it ran a good while: this is a new failure, not the same one
            shard.why_down += f"; restarting it in {wait:g} s"
            if not shard.down_logged:
                shard.down_logged = True
                log.warning("%s (%d miners) is %s: its miners read as failures until it is back",
                            shard.name, len(shard.targets), shard.why_down)
            else:
                log.debug("%s is %s", shard.name, shard.why_down)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RESTART_MAX_S)

    async def _life(self, shard: _Shard, restart: bool) -> None:
        """One life of the worker: start it, hand it its miners, read its frames until it ends;
        then it is killed if it still runs, and reaped."""
        shard.why_down, shard.up_since = "starting", None
        shard.ready.clear()
        ours, theirs = socket.socketpair()
        try:
            try:
                shard.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", WORKER_MODULE, str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                )
            finally:
                theirs.close()  # the worker's end is the worker's alone: its exit closes the link
            reader, shard.writer = await asyncio.open_unix_connection(sock=ours)
        except OSError as err:
            ours.close()
            shard.why_down = f"down (it could not be started: {err})"
            shard.settled.set()
            return
        frames = asyncio.create_task(self._frames(shard, reader), name=f"{shard.name} frames")
        try:
            await shard.send([*self._start_frames(shard)])
            ready = asyncio.create_task(shard.ready.wait())
            await asyncio.wait({frames, ready}, timeout=START_S, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not shard.ready.is_set():
                if not frames.done():
                    shard.why_down = f"down (it did not start within {START_S:g} s)"
                return
            if restart:  # identified before it takes reads: until then its miners read as down
                shard.why_down = "identifying its miners after a restart"
                await shard.ask(next(self._request_ids), "discover", sorted(shard.ids))
            shard.up, shard.up_since = True, asyncio.get_running_loop().time()
            shard.settled.set()
            if shard.down_logged:
                shard.down_logged = False
                log.info("%s is back (process %d)", shard.name, shard.process.pid)
            await frames
        except ShardLost:
            pass
        finally:
            shard.up = False
            frames.cancel()
            await asyncio.gather(frames, return_exceptions=True)
            if shard.writer is not None:
                shard.writer.close()
                shard.writer = None
            shard.lose_requests()
            await _reap(shard)
            shard.settled.set()

    def _start_frames(self, shard: _Shard) -> Iterator[bytes]:
        targets = [asdict(t) for t in shard.targets]
        for i in range(0, len(targets), TARGETS_PER_FRAME):
            yield frame(["targets", targets[i:i + TARGETS_PER_FRAME]])
        yield frame(["start", asdict(self._settings), logging.getLogger("wattshift").getEffectiveLevel()])

    async def _frames(self, shard: _Shard, reader: asyncio.StreamReader) -> None:
        """Every frame the worker sends, until its link closes, it is silent too long or it
        breaks the protocol (then ``why_down`` says which)."""
        while True:
            silence = self._hang_s if shard.ready.is_set() else START_S
            try:
                message = await asyncio.wait_for(read_frame(reader), silence)
            except TimeoutError:
                shard.why_down = f"hung (it sent nothing for {silence:g} s; killed)"
                return
            except ProtocolError as err:
                shard.why_down = f"down (it broke the protocol: {err}; killed)"
                return
            if message is None:
                shard.why_down = "down (its link closed)"
                return
            try:
                self._take(shard, message)
            except ProtocolError as err:
                shard.why_down = f"down (it broke the protocol: {err}; killed)"
                return

    def _take(self, shard: _Shard, message: list[Any]) -> None:
        kind = message[0]
        if kind == "beat":
            return
        if kind == "part" and len(message) == 3 and isinstance(message[2], list):
            request = shard.requests.get(message[1])
            rows = [decode_result(row) for row in message[2]]
            if request is not None:  # else: a request given up on (its worker went down meanwhile)
                request[0].update((d, r) for d, r in rows if d in shard.ids)
        elif kind == "done" and len(message) == 2:
            request = shard.requests.get(message[1])
            if request is not None and not request[1].done():
                request[1].set_result(None)
        elif kind == "ident" and len(message) == 3 and isinstance(message[2], list):
            for row in message[2]:
                self._identify(shard, row)
        elif kind == "log" and len(message) == 4:
            _, level, name, text = message
            if isinstance(level, int) and isinstance(name, str) and name.startswith(("wattshift.", "pyasic")):
                logging.getLogger(name[:100]).log(level, "%s (%s)", str(text)[:MAX_LOG_CHARS], shard.name)
        elif kind == "ready" and len(message) == 1:
            shard.ready.set()
        else:
            raise ProtocolError(f"a message of an unknown kind {str(kind)[:20]!r}")

    def _identify(self, shard: _Shard, row: Any) -> None:
        if not isinstance(row, list) or len(row) != 2 or row[0] not in shard.ids:
            raise ProtocolError("an identity of a miner that is not its own")
        device_id, raw = row
        identity = None if raw is None else Identity.decode(raw)
        if self._identities.get(device_id) == identity:
            return
        if identity is None:
            del self._identities[device_id]
        else:
            self._identities[device_id] = identity
        self._on_identity(device_id, identity)


async def _reap(shard: _Shard) -> None:
    process = shard.process
    if process is None:
        return
    if process.returncode is None:
        # Not process.kill(): subprocess's send_signal polls first, and a poll reaps a worker
        # that just died under asyncio's child watcher, which then reports exit code 255.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    returncode = await process.wait()
    if shard.why_down == "down (its link closed)":
        shard.why_down = f"down ({exit_text(returncode)})"


def exit_text(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
