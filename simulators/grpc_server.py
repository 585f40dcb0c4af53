"""A gRPC (HTTP/2) listener that plays a simulated miner's faults below the gRPC layer.

grpclib's :class:`~grpclib.server.Server` serves the firmware's gRPC services; this module puts a
thin protocol in front of every connection that decides, from ``miner.fault`` and
``miner.reachable`` at the moment bytes arrive, what the client gets:

- NO_ANSWER, or rebooting: the connection is dropped with a TCP reset, as on the CGMiner port.
- HANG: the connection is accepted and the request read; nothing ever comes back, not even the
  server's HTTP/2 SETTINGS, until :meth:`GrpcServer.stop` drops it. A connection that starts to
  hang stays hung even if the fault is cleared, because the bytes it swallowed are gone.
- GARBAGE: the request is read and answered with bytes that are not HTTP/2, then closed (a
  wedged proxy or a wrong service on the port). Clients fail in their HTTP/2 layer, below gRPC.
- anything else: the bytes go to grpclib unchanged.

Faults are judged per chunk of received bytes, not once per connection, so a client that keeps
its channel open still sees a fault that begins mid-connection.

Depends on grpclib's ``Server._protocol_factory`` (private, stable through grpclib 0.4.x, which
``pyproject.toml`` pins); the Braiins simulator tests fail at once if it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import grpclib.server
from grpclib.protocol import H2Protocol

from .cgminer import GARBAGE
from .miner import Fault, SimulatedMiner

if TYPE_CHECKING:
    from grpclib._typing import IServable


class GrpcServer:
    """The gRPC services of one simulated miner on ``(miner.host, port)``, with its faults."""

    def __init__(self, miner: SimulatedMiner, services: Collection[IServable], *, port: int) -> None:
        self.miner = miner
        self.services = services
        self.port = port
        self._server: _GatedServer | None = None
        self._connections: set[asyncio.Transport] = set()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        # Built here, not in __init__: grpclib binds the running event loop when constructed.
        self._server = _GatedServer(self.miner, self.services, self._connections)
        await self._server.start(self.miner.host, self.port, reuse_address=True, backlog=256)

    async def stop(self) -> None:
        """Stop listening and drop every connection, hanging ones too."""
        if self._server is None:
            return
        self._server.close()  # stops accepting and cancels running request handlers
        for transport in list(self._connections):
            transport.abort()
        await self._server.wait_closed()
        self._server = None


class _GatedServer(grpclib.server.Server):
    """grpclib's server with :class:`_FaultGate` in front of each connection's HTTP/2 protocol."""

    def __init__(
        self,
        miner: SimulatedMiner,
        services: Collection[IServable],
        connections: set[asyncio.Transport],
    ) -> None:
        super().__init__(services)
        self._miner = miner
        self._open_connections = connections

    def _protocol_factory(self) -> H2Protocol:
        # The gate hands the connection to grpclib only if the miner answers; grpclib's own
        # per-connection handler is created lazily so that dropped connections leave nothing.
        make_h2 = super()._protocol_factory
        return _FaultGate(self._miner, make_h2, self._open_connections)  # type: ignore[return-value]


def _fault_now(miner: SimulatedMiner) -> Fault:
    """The transport-level fault to play right now (NONE: let gRPC answer)."""
    if not miner.reachable:
        return Fault.NO_ANSWER
    if miner.fault in (Fault.HANG, Fault.GARBAGE):
        return miner.fault
    return Fault.NONE


class _FaultGate(asyncio.Protocol):
    """One connection: plays the miner's transport faults, or passes bytes to grpclib."""

    def __init__(
        self,
        miner: SimulatedMiner,
        make_h2: Callable[[], H2Protocol],
        connections: set[asyncio.Transport],
    ) -> None:
        self._miner = miner
        self._make_h2 = make_h2
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._h2: H2Protocol | None = None
        self._playing = Fault.NONE  # a fault this connection has committed to

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(transport)
        fault = _fault_now(self._miner)
        if fault is Fault.NO_ANSWER:
            _reset(transport)
        elif fault is Fault.NONE:
            self._h2 = self._make_h2()
            self._h2.connection_made(transport)
        else:
            self._playing = fault  # HANG or GARBAGE: wait for the request first

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._playing is Fault.NONE:
            fault = _fault_now(self._miner)
            if fault is Fault.NONE and self._h2 is not None:
                self._h2.data_received(data)
                return
            self._playing = fault
        if self._playing is Fault.NO_ANSWER:
            _reset(self._transport)
        elif self._playing is Fault.GARBAGE:
            self._transport.write(GARBAGE)
            self._transport.close()
        # HANG: swallow the bytes; stop() drops the connection.

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)
        if self._h2 is not None:
            self._h2.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._h2 is not None:
            self._h2.pause_writing()

    def resume_writing(self) -> None:
        if self._h2 is not None:
            self._h2.resume_writing()


def _reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a TCP reset, the way a dead host's stack answers."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    transport.abort()
