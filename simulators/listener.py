"""One TCP listener on a simulated miner's loopback address: what every wire the simulators speak
(CGMiner on 4028, HTTP on 80, Whatsminer API v3 on 4433) shares.

Each connection is served by :meth:`TcpListener._answer` in its own task; ``stop`` cancels the
ones still open (a miner that hangs keeps its connection until then) and waits for them, so a
test that stops a simulator leaves no task and no socket behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .miner import SimulatedMiner


class TcpListener:
    # A client that goes away mid-answer (pyasic's deadline, a reset) is its business, not a
    # fault of the simulator; a wire adds the errors its own parsing raises on such a cut.
    DROPPED: ClassVar[tuple[type[BaseException], ...]] = (ConnectionError, asyncio.IncompleteReadError)

    def __init__(self, miner: SimulatedMiner, port: int) -> None:
        self.miner = miner
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, host=self.miner.host, port=self.port, reuse_address=True, backlog=256
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except self.DROPPED:
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels hanging connections; the task is ours, nothing waits on it
        finally:
            self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
