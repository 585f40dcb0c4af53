"""Many miners through pyasic: identification under a concurrency bound, a cache of drivers,
polling with a deadline per miner.

DESIGN.md, section 5: an unbounded ``gather(get_miner)`` over 1,000 miners finds none (the CPU
starves pyasic's 3 s identification budget), a semaphore of about 100 finds all, and
``get_multiple_miners(limit=)`` does not bound concurrency. So every operation on a miner here
holds one slot of one semaphore, and each miner is identified once and cached; an identified
miner is identified again only after repeated failures (it may have been re-flashed or
replaced). An operator who names the firmware skips identification altogether.

With ``telemetry_workers``, the reads (and the identification they need) go to that many worker
processes, each running this same fleet over every n-th miner (telemetry_shards); this fleet
then keeps, for the commands, a driver built from what each worker identified its miner as.

A read may outlive the call that asked for it. A miner that hangs costs its whole read deadline,
and the control loop must not make every other miner's shed wait that long; so a caller may ask
for the answers that came in until, after the first, none has come for a short gap
(``answer_gap_s``). A gap rather than a fixed window, because a large fleet read through the
concurrency bound keeps answering for longer than any fixed window would allow. A miner still
being read then is reported as a timeout for now (the loop counts it at its worst case), its
read goes on, and its answer is what the next read of it returns: a miner slower than the gap is
then known every other plan rather than never. That answer is safe to use because a miner
counted at its worst case is sent no command, so none came between its read and that plan.
Each miner has at most one read in flight, so a hung one is never asked twice at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from wattshift.model.miner import Failure, MinerCapability, MinerReading

from .base import DeviceError
from .pyasic_backends import FIRMWARE_HINTS, build_from_hint, identify, set_credentials
from .pyasic_failures import CGMINER_PORT, diagnose, within
from .pyasic_miner import DEFAULT_DEADLINES, Deadlines, PyasicMiner
from .telemetry_shards import ShardedTelemetry
from .telemetry_wire import Identity

if TYPE_CHECKING:
    from wattshift.daemon.config.site import SiteConfig

log = logging.getLogger(__name__)

AUTO = "auto"
# Failures that say the miner at the address may no longer be the one we identified.
LOST = frozenset({Failure.NO_ANSWER, Failure.TIMEOUT, Failure.GARBAGE})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MinerTarget:
    """One address and what the operator said about it."""

    address: str
    firmware: str = AUTO  # "auto": identify; else a key of FIRMWARE_HINTS: build it directly
    model: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    nameplate_watts: float | None = None


@dataclass(frozen=True, slots=True)
class FleetSettings:
    concurrency: int = 100
    identify_s: float = 10.0  # pyasic's own budget is 3 s for the type plus 3 s for the model
    deadlines: Deadlines = DEFAULT_DEADLINES
    reidentify_after: int = 3  # consecutive lost reads before an identified miner is identified again
    # After a failed identification, wait this long before the next try: a dead address would
    # otherwise cost pyasic's whole identification budget on every poll.
    identify_retry_s: float = 60.0
    # Reads in this many worker processes (0: in this one); one that sends nothing for
    # worker_hang_s is hung, one that went down starts again after worker_restart_s, doubling.
    telemetry_workers: int = 0
    worker_hang_s: float = 15.0
    worker_restart_s: float = 1.0


class MinerFleet:
    """The miners of a site, each behind a :class:`PyasicMiner` once identified."""

    def __init__(self, targets: Iterable[MinerTarget], settings: FleetSettings = FleetSettings()) -> None:
        self._targets: dict[str, MinerTarget] = {}
        for target in targets:
            if target.address in self._targets:
                raise ValueError(f"miner {target.address} is listed twice")
            if target.firmware != AUTO and target.firmware not in FIRMWARE_HINTS:
                known = ", ".join([AUTO, *sorted(FIRMWARE_HINTS)])
                raise ValueError(f"miner {target.address}: unknown firmware {target.firmware!r} (known: {known})")
            self._targets[target.address] = target
        self._settings = settings
        self._gate = asyncio.Semaphore(settings.concurrency)
        self._drivers: dict[str, PyasicMiner] = {}
        # One read per miner at most; a read that outlived its caller waits here for the next.
        self._in_flight: dict[str, asyncio.Task[MinerReading | DeviceError]] = {}
        self._lost_reads: dict[str, int] = {}
        self._identify_failed: dict[str, tuple[float, Failure, str]] = {}  # retry time, failure, detail
        self._down: set[str] = set()  # to log a miner going away once, and its return once
        self._capability_lost: list[Callable[[str], None]] = []
        self.telemetry = (
            ShardedTelemetry(list(self._targets.values()), settings, settings.telemetry_workers, self._adopt)
            if settings.telemetry_workers > 0 else None
        )

    @classmethod
    def from_site(cls, site: SiteConfig) -> MinerFleet:
        targets = []
        for group in site.miners:
            login = site.credentials.get(group.credentials) if group.credentials else None
            for host in group.hosts():
                targets.append(
                    MinerTarget(
                        host,
                        firmware=group.firmware,
                        model=group.model,
                        username=login.username if login else None,
                        password=login.password.get_secret_value() if login else None,
                        nameplate_watts=group.max_kw * 1000.0 if group.max_kw else None,
                    )
                )
        call_s = site.drivers.call_timeout_seconds
        # A command and its read-back must fit in the actuator's step deadline (3 calls), so a
        # command that shows no effect within one call's time is reported IGNORED, not TIMEOUT.
        deadlines = Deadlines(call_s=call_s, confirm_s=call_s, poll_s=min(0.5, call_s / 5))
        workers = site.drivers.telemetry_workers
        return cls(targets, FleetSettings(concurrency=site.drivers.concurrency, deadlines=deadlines,
                                          telemetry_workers=workers))

    # -- what the control loop asks -------------------------------------------------------------

    @property
    def device_ids(self) -> list[str]:
        return list(self._targets)

    def driver(self, device_id: str) -> PyasicMiner | None:
        return self._drivers.get(device_id)

    def capability(self, device_id: str) -> MinerCapability | None:
        driver = self._drivers.get(device_id)
        return driver.capability if driver else None

    def on_capability_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(device_id)`` whenever a miner's driver is dropped to identify it again:
        its capability is unknown until then, so its worst case may rise with no command sent."""
        self._capability_lost.append(callback)

    async def discover(self) -> dict[str, PyasicMiner | DeviceError]:
        """Identify every miner not identified yet; the others keep their cached driver."""
        if self.telemetry is not None:
            found: dict[str, PyasicMiner | DeviceError] = {}
            for device_id, answer in (await self.telemetry.discover()).items():
                driver = self._drivers.get(device_id)
                if isinstance(answer, DeviceError):
                    found[device_id] = answer
                elif driver is not None:
                    found[device_id] = driver
                else:
                    detail = "its telemetry worker identified it as nothing pyasic builds"
                    found[device_id] = DeviceError(device_id, Failure.UNIDENTIFIED, detail)
            return found
        return await self._each(self._targets, self._driver_for)

    async def read_all(self, *, answer_gap_s: float | None = None) -> dict[str, MinerReading | DeviceError]:
        return await self.read(list(self._targets), answer_gap_s=answer_gap_s)

    async def read(
        self, device_ids: Iterable[str], *, answer_gap_s: float | None = None
    ) -> dict[str, MinerReading | DeviceError]:
        """Poll the given miners (identifying any not yet known), each under its own deadline.

        With ``answer_gap_s``, return once some miner has answered and none has for that long
        since: a miner still being read is reported as TIMEOUT, and its read lands for the next
        call. Until the first answer there is nothing to act on, so nothing is cut short (a
        large fleet's first answers may take a while when the CPU is busy)."""
        if self.telemetry is not None:
            return await self.telemetry.read(list(device_ids), answer_gap_s=answer_gap_s)
        reads = {d: self._read_task(d) for d in device_ids}
        await _until_quiet([task for task in reads.values() if not task.done()], answer_gap_s)
        results: dict[str, MinerReading | DeviceError] = {}
        for device_id, task in reads.items():
            if not task.done():
                results[device_id] = DeviceError(
                    device_id, Failure.TIMEOUT, f"no answer within {answer_gap_s:g} s of the others; still being read"
                )
                continue
            if self._in_flight.get(device_id) is task:
                del self._in_flight[device_id]
            results[device_id] = task.result()
        return results

    async def close(self) -> None:
        """Forget the drivers and stop the reads in flight. pyasic holds no connection between
        calls, so none is open."""
        reads = list(self._in_flight.values())
        self._in_flight.clear()
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        if self.telemetry is not None:
            await self.telemetry.close()
        self._drivers.clear()

    # -- internals ------------------------------------------------------------------------------

    async def _each(
        self, device_ids: Iterable[str], operation: Callable[[str], Awaitable[T]]
    ) -> dict[str, T | DeviceError]:
        """``operation`` on each miner, at most ``concurrency`` miners at a time."""
        return dict(await asyncio.gather(*(self._bounded(d, operation) for d in device_ids)))

    async def _bounded(self, device_id: str, operation: Callable[[str], Awaitable[T]]) -> tuple[str, T | DeviceError]:
        if device_id not in self._targets:
            return device_id, DeviceError(device_id, Failure.UNIDENTIFIED, "not a miner of this site")
        async with self._gate:
            try:
                return device_id, await operation(device_id)
            except DeviceError as err:
                return device_id, err

    def _read_task(self, device_id: str) -> asyncio.Task[MinerReading | DeviceError]:
        """The miner's read in flight (or landed since the last call), else a new one."""
        task = self._in_flight.get(device_id)
        if task is None:

            async def read() -> MinerReading | DeviceError:
                return (await self._bounded(device_id, self._read_one))[1]

            task = self._in_flight[device_id] = asyncio.create_task(read(), name=f"read {device_id}")
        return task

    async def _read_one(self, device_id: str) -> MinerReading:
        driver = await self._driver_for(device_id)
        try:
            reading = await driver.read()
        except DeviceError as err:
            self._note_failure(device_id, err)
            if err.failure in LOST:
                self._count_lost_read(device_id)
            raise
        self._note_success(device_id)
        return reading

    async def _driver_for(self, device_id: str) -> PyasicMiner:
        driver = self._drivers.get(device_id)
        if driver is not None:
            return driver
        now = asyncio.get_running_loop().time()
        if device_id in self._identify_failed:
            retry_at, failure, detail = self._identify_failed[device_id]
            if now < retry_at:
                raise DeviceError(device_id, failure, f"{detail}; next identification in {retry_at - now:.0f} s")
        try:
            driver = await self._identify(self._targets[device_id])
        except DeviceError as err:
            self._note_failure(device_id, err)
            self._identify_failed[device_id] = (now + self._settings.identify_retry_s, err.failure, err.detail)
            raise
        self._identify_failed.pop(device_id, None)
        self._drivers[device_id] = driver
        return driver

    async def _identify(self, target: MinerTarget) -> PyasicMiner:
        address, settings = target.address, self._settings
        action = "identify" if target.firmware == AUTO else f"build {target.firmware} miner"
        call: Awaitable[Any] = (
            identify(address)
            if target.firmware == AUTO
            else build_from_hint(address, target.firmware, target.model)
        )
        miner: Any = None
        symptom = "pyasic could not tell what it is"
        try:
            miner = await within(address, action, call, settings.identify_s)
        except DeviceError:
            raise
        except Exception as err:  # UnicodeDecodeError on non-UTF-8 bytes, a model it would not tell...
            symptom = f"pyasic raised {err!r}"
        if miner is None:
            # Raised outside the handler, so the error does not keep pyasic's frames alive.
            raise await self._unidentified(address, action, symptom)
        set_credentials(miner, target.username, target.password)
        driver = await PyasicMiner.open(miner, deadlines=settings.deadlines, nameplate_watts=target.nameplate_watts)
        log.debug("%s: %s %s, %s", address, driver.firmware, driver.model, driver.capability.describe())
        return driver

    async def _unidentified(self, address: str, action: str, symptom: str) -> DeviceError:
        seconds = self._settings.deadlines.call_s
        return await diagnose(
            address, action, symptom, port=CGMINER_PORT, healthy=Failure.UNIDENTIFIED, seconds=seconds
        )

    def _adopt(self, device_id: str, identity: Identity | None) -> None:
        """A telemetry worker (re)identified the miner, or dropped it to identify it again: the
        driver for commands follows, built from the worker's word with no request to the miner."""
        dropped = self._drivers.pop(device_id, None) is not None
        try:
            miner = None if identity is None else identity.build(device_id)
        except LookupError as err:  # not a class of the pyasic this daemon runs: nothing to command
            log.warning("%s: its telemetry worker identified it as %s; not identified here", device_id, err)
            miner = None
        if identity is not None and miner is not None:
            target = self._targets[device_id]
            set_credentials(miner, target.username, target.password)
            self._drivers[device_id] = PyasicMiner(miner, identity.capability, deadlines=self._settings.deadlines)
        if dropped:  # a new capability, or none yet: the worst case may have risen either way
            for callback in self._capability_lost:
                callback(device_id)

    def _count_lost_read(self, device_id: str) -> None:
        lost = self._lost_reads.get(device_id, 0) + 1
        self._lost_reads[device_id] = lost
        if lost >= self._settings.reidentify_after and self._targets[device_id].firmware == AUTO:
            # Identify it again on the next poll: the address may now hold a different miner.
            self._lost_reads[device_id] = 0
            if self._drivers.pop(device_id, None) is not None:
                for callback in self._capability_lost:
                    callback(device_id)

    def _note_failure(self, device_id: str, err: DeviceError) -> None:
        if device_id not in self._down:
            self._down.add(device_id)
            log.warning("%s: unavailable: %s", device_id, err)

    def _note_success(self, device_id: str) -> None:
        self._lost_reads[device_id] = 0
        if device_id in self._down:
            self._down.discard(device_id)
            log.info("%s: available again", device_id)


async def _until_quiet(tasks: list[asyncio.Task[Any]], gap_s: float | None) -> None:
    """Wait for every task, or, with ``gap_s``, until none has ended for that long since the
    first one did (there is nothing to act on before the first, so that wait is unbounded).

    One done-callback per task: waiting again on the whole pending set after every answer
    (``asyncio.wait(..., FIRST_COMPLETED)`` in a loop) costs O(n) per answer, and at 10,000
    miners that quadratic was most of a cycle's CPU (benchmarks/telemetry_cycle.py).
    """
    if not tasks:
        return
    if gap_s is None:
        await asyncio.wait(tasks)
        return
    landed = asyncio.Event()
    left = len(tasks)

    def ended(_task: asyncio.Task[Any]) -> None:
        nonlocal left
        left -= 1
        landed.set()

    for task in tasks:
        task.add_done_callback(ended)
    try:
        await landed.wait()
        while left:
            landed.clear()
            try:
                async with asyncio.timeout(gap_s):
                    await landed.wait()
            except TimeoutError:
                return  # nobody answered for the whole gap: the rest are late
    finally:
        for task in tasks:
            task.remove_done_callback(ended)

