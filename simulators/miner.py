"""What every simulated miner shares: its physics, its address, and the faults it can play.

A firmware simulator (``braiins``, ``luxos``, ``whatsminer``) subclasses :class:`SimulatedMiner`,
starts its protocol servers in :meth:`start_servers`, and routes every command that changes the
machine through :meth:`control`, so the faults REFUSE and IGNORE behave the same on every wire.
"""

from __future__ import annotations

import enum
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

from wattshift.model.specs import MinerSpec

from .physics import Clock, MinerPhysics

T = TypeVar("T")


class Fault(enum.StrEnum):
    """Faults a simulated miner plays on command (DESIGN.md, section 6)."""

    NONE = "none"
    NO_ANSWER = "no_answer"  # connections are dropped at once: the miner is gone from the network
    HANG = "hang"  # the connection is accepted, the request read, and nothing ever comes back
    GARBAGE = "garbage"  # answers bytes that are not the protocol
    REFUSE = "refuse"  # commands that change the machine are answered with an error
    IGNORE = "ignore"  # commands that change the machine are answered OK and not carried out


class CommandRefused(Exception):
    """Raised by :meth:`SimulatedMiner.control` while the miner plays :attr:`Fault.REFUSE`."""


class SimulatedMiner(ABC):
    """One miner on one loopback address, answering from its :class:`MinerPhysics`."""

    firmware: ClassVar[str]

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        **physics_options: float,
    ) -> None:
        self.host = host
        self.spec = spec
        self.physics = MinerPhysics(spec, clock=clock, **physics_options)
        self.fault = Fault.NONE
        self.rng = random.Random(seed)
        a, b, c, d = (int(o) for o in host.split("."))
        self.mac = f"02:00:{a:02X}:{b:02X}:{c:02X}:{d:02X}"
        self.serial = f"SIM{seed:06d}"
        self.commands_received: list[str] = []  # every command name, for tests to inspect

    # -- lifecycle ------------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Start listening on this miner's address."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop listening and drop every open connection (hanging ones too)."""

    async def __aenter__(self) -> SimulatedMiner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults and commands --------------------------------------------------------------------

    def set_fault(self, fault: Fault | str) -> None:
        self.fault = Fault(fault)

    @property
    def reachable(self) -> bool:
        """False while the miner is gone (NO_ANSWER) or rebooting: connections are dropped."""
        return self.fault is not Fault.NO_ANSWER and not self.physics.rebooting

    def control(self, action: Callable[[], T]) -> T | None:
        """Carry out a command that changes the machine, unless a fault says otherwise."""
        if self.fault is Fault.REFUSE:
            raise CommandRefused(f"{self.host}: command refused (simulated fault)")
        if self.fault is Fault.IGNORE:
            return None
        return action()

    def record(self, command: str) -> None:
        self.commands_received.append(command)

    # -- ground truth for tests and the launcher ------------------------------------------------

    def true_watts(self) -> float:
        return self.physics.power_watts()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.model} at {self.host} fault={self.fault}>"
