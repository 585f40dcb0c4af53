"""One ASIC miner driven through pyasic: the :class:`~.base.MinerDriver` for every firmware
pyasic speaks (Braiins OS+, Whatsminer, LuxOS, VNish, stock Antminer).

Every pyasic call runs under its own deadline; every failure comes out as a
:class:`~.base.DeviceError` (never ``False``); every command is confirmed by reading the miner
back, because pyasic's ``True`` means only that the firmware did not object. A limit is
confirmed by the limit it reads; a sleep by the firmware's state and a falling draw (boards wind
down over seconds); a wake by the firmware's state (boards boot for minutes, hashrate lags).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from wattshift.model.miner import (
    UNKNOWN_MINER_WATTS,
    CapabilitySource,
    Failure,
    MinerCapability,
    MinerReading,
    PowerControl,
)

from .base import DeviceError
from .cgminer_telemetry import NotLean, Telemetry
from .pyasic_backends import BackendTraits, model_name, power_range_for, traits_for
from .pyasic_failures import diagnose, probe, probe_port, within
from .pyasic_queries import Query

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a poll asks for. Temperatures come with the hashboards; LuxOS's hashrate too (pyasic
# 0.79.0's LUXMiner._get_hashrate always returns None; MinerData sums the boards instead).
READ_ITEMS = ("wattage", "wattage_limit", "hashrate", "hashboards", "fans", "errors", "is_mining")
STATE_ITEMS = ("wattage", "hashrate", "hashboards", "is_mining")
LIMIT_ITEMS = ("wattage_limit",)
NUMBERS = ("wattage", "wattage_limit", "hashrate")

# A miner drawing less than this share of its lowest setting is not hashing at any setting:
# asleep, its control board and fans draw tens of watts, and an S21's lowest is ~1.8 kW.
ASLEEP_BELOW_SHARE_OF_MIN = 0.1
# A woken miner that tells nothing of its boards is taken as booting once its draw has climbed
# this much over its draw before the wake: booting boards draw a few percent of nominal (~100 W).
WAKE_RISE_WATTS = 50.0
# Firmwares hold an integer number of watts.
LIMIT_TOLERANCE_WATTS = 1.0
# A paused miner whose draw has come down by this much since the first read-back is releasing
# its power: hashboards wind down over seconds, and a slow one is obeying, not lying.
FALLING_WATTS = 50.0
# Whatsminer reports the ceiling of its power limit, not its floor. Below about half of the
# factory draw its boards are not stable; a lower wish sleeps the miner instead. (An assumed
# share: MicroBT does not publish a floor.)
WHATSMINER_FLOOR_SHARE = 0.5
# Before the capability is learned the driver allows nothing.
_NOTHING_YET = MinerCapability(PowerControl.ON_OFF, 0.0, 0.0, can_sleep=False)


@dataclass(frozen=True, slots=True)
class Deadlines:
    """How long to wait. A pyasic call gets ``call_s``; a command's read-back may take
    ``confirm_s`` in all, re-reading every ``poll_s``."""

    call_s: float = 5.0
    confirm_s: float = 10.0
    poll_s: float = 0.5


DEFAULT_DEADLINES = Deadlines()


class PyasicMiner:
    """A :class:`~.base.MinerDriver` over one pyasic miner object.

    Build it with :meth:`open`, which learns the capability from the miner; the capability
    says where it came from (:class:`~.base.CapabilitySource`). ``device_id`` is the address.
    """

    def __init__(
        self,
        miner: Any,
        capability: MinerCapability,
        *,
        traits: BackendTraits | None = None,
        deadlines: Deadlines = Deadlines(),
    ) -> None:
        self._miner = miner
        self._capability = capability
        self._traits = traits or traits_for(miner)
        self._deadlines = deadlines
        self._model = model_name(miner)
        # Polls take the lean path until the firmware shows it does not answer it that way.
        self._lean = self._traits.lean

    @classmethod
    async def open(
        cls,
        miner: Any,
        *,
        deadlines: Deadlines = Deadlines(),
        nameplate_watts: float | None = None,
    ) -> PyasicMiner:
        """The driver for ``miner``, with its capability learned from the firmware (Braiins OS+
        constraints, the Whatsminer power limit, LuxOS profiles), else from the model table.
        ``nameplate_watts``, the operator's figure, stands in where neither tells."""
        # Learning the capability takes the driver's own guarded calls, so the driver exists
        # first, with a capability that allows nothing, and learns the real one.
        driver = cls(miner, _NOTHING_YET, traits=traits_for(miner), deadlines=deadlines)
        driver._capability = await driver._learn_capability(nameplate_watts)
        return driver

    # -- MinerDriver ----------------------------------------------------------------------------

    @property
    def device_id(self) -> str:
        return str(self._miner.ip)

    @property
    def capability(self) -> MinerCapability:
        return self._capability

    @property
    def firmware(self) -> str:
        return self._traits.firmware

    @property
    def model(self) -> str | None:
        return self._model

    async def read(self) -> MinerReading:
        poll = await self._poll()
        hashing = poll.hashrate_ths is not None and poll.hashrate_ths > 0.0
        booting = False
        if not hashing and self._traits.state_query is not None:
            # Only a miner that hashes nothing costs the extra call (Braiins OS+: one gRPC).
            booting = await self._query(self._traits.state_query, "read") is True
        elif not hashing and self._traits.reports_mining:
            booting = poll.is_mining is True
        return MinerReading(
            device_id=self.device_id,
            model=self._model,
            firmware=self._traits.firmware,
            watts=poll.watts,
            limit_watts=poll.limit_watts,
            hashrate_ths=poll.hashrate_ths,
            mining=self._mining(poll),
            temperatures_c=poll.temperatures_c,
            fans_rpm=poll.fans_rpm,
            errors=poll.errors,
            booting=booting,
        )

    @property
    def pyasic_miner(self) -> Any:
        """The pyasic miner object (a telemetry worker tells the daemon its class)."""
        return self._miner

    @property
    def polls_lean(self) -> bool:
        """Whether polls take the lean path (cgminer_telemetry) rather than pyasic's get_data."""
        return self._lean is not None

    async def set_power_limit(self, watts: float) -> float:
        capability = self._capability
        if capability.control is PowerControl.ON_OFF:
            detail = f"set_power_limit: {self.firmware} firmware has no power target here; sleep or wake it"
            raise self._error(Failure.UNSUPPORTED, detail)
        target = capability.achievable_watts(watts)
        if target <= 0:
            lowest = capability.min_watts
            detail = f"set_power_limit: {watts:.0f} W is below the lowest setting, {lowest:.0f} W; sleep it instead"
            raise self._error(Failure.UNSUPPORTED, detail)
        await self._command(
            "set_power_limit",
            lambda: self._miner.set_power_limit(int(target)),
            false_is_unconfirmed=self._traits.false_set_is_unconfirmed,
        )
        data = await self._confirm(
            "set_power_limit",
            lambda: self._get_data(LIMIT_ITEMS, "set_power_limit read-back"),
            lambda d: d.wattage_limit is not None and abs(d.wattage_limit - target) <= LIMIT_TOLERANCE_WATTS,
            lambda d: f"the limit reads {d.wattage_limit} W, not the {target:.0f} W asked",
        )
        return float(data.wattage_limit)

    async def sleep(self) -> None:
        """Pause it; confirmed once the firmware says its boards stopped and the draw shows it
        (down at the sleep draw, or on its way there: the draw falls over seconds)."""
        if not self._capability.can_sleep:
            raise self._error(Failure.UNSUPPORTED, f"sleep: {self.firmware} firmware cannot sleep here")
        await self._command("sleep", self._miner.stop_mining)
        first: list[float] = []  # the draw at the first read-back, to see the trend against

        def stopped(state: _State) -> bool:
            if state.watts is not None and not first:
                first.append(state.watts)
            # The firmware's word where it gives one; else no hashrate (LuxOS).
            halted = state.running is False or (state.running is None and state.hashrate_ths == 0.0)
            if not halted:
                return False
            if state.watts is None or state.watts < self._asleep_below:
                return True
            return state.watts <= first[0] - FALLING_WATTS

        await self._confirm("sleep", lambda: self._read_state("sleep"), stopped, _State.describe)

    async def wake(self) -> None:
        """Resume it; confirmed once the firmware says its boards run. Hashboards take minutes
        to boot and hashrate lags further, so neither full draw nor hashrate is waited for:
        the control loop counts a booting miner at its limit until it reads on."""
        if not self._capability.can_sleep:
            raise self._error(Failure.UNSUPPORTED, f"wake: {self.firmware} firmware cannot sleep or wake here")
        # A firmware that tells nothing of its boards (LuxOS, Whatsminer API v3) is judged by
        # its draw: read it before the command, so the climb of booting boards shows.
        silent = self._traits.state_query is None and not self._traits.reports_mining
        before = (await self._read_state("wake")).watts if silent else None
        await self._command("wake", self._miner.resume_mining)

        def started(state: _State) -> bool:
            if state.running is not None:
                return state.running
            # No word from the firmware (LuxOS, which sets its boards' frequency at once on
            # wakeup; Whatsminer API v3): hashing, or a draw that climbs as booting boards
            # start to draw. A level draw is no sign: a miner slept a moment ago is still
            # winding down, and one that ignored the wake stays where it was.
            if state.hashrate_ths is not None and state.hashrate_ths > 0.0:
                return True
            return state.watts is not None and before is not None and state.watts >= before + WAKE_RISE_WATTS

        await self._confirm("wake", lambda: self._read_state("wake"), started, _State.describe)

    # -- pyasic calls ---------------------------------------------------------------------------

    async def _call(self, action: str, call: Awaitable[T], *, healthy: Failure) -> T:
        """One pyasic call under its deadline; every failure becomes a DeviceError.

        ``healthy`` is the failure to report when a probe finds the miner well: then the miner
        itself answered badly (GARBAGE for a read, REFUSED for a command).
        """
        try:
            return await within(self.device_id, action, call, self._deadlines.call_s)
        except DeviceError:
            raise
        except Exception as err:  # APIError, KeyError on an empty answer, TypeError after a failed logon...
            symptom = f"pyasic raised {err!r}"
        # Raised outside the handler, so the error does not keep pyasic's frames alive.
        raise await self._diagnose(action, symptom, healthy=healthy)

    async def _poll(self) -> Telemetry:
        """One poll: the lean multicommand where the firmware answers it, else pyasic's get_data.

        A lean answer that cannot be read is judged by a probe of the CGMiner port. Healthy, the
        firmware simply does not answer this way (an older version, a refused multicommand): it
        is read through pyasic from then on. Silent, it is a TIMEOUT at once (a second wait
        would double a hung miner's cost). Closed or garbling, this poll goes through pyasic,
        which reads what the miner's other APIs still tell (a stock Antminer's web CGI while
        bmminer restarts) and diagnoses the miner itself when nothing answers.
        """
        lean = self._lean
        if lean is not None:
            port, seconds = probe_port(self._miner), self._deadlines.call_s
            try:
                poll = await within(self.device_id, "read", lean.read(self._miner), seconds)
            except NotLean as err:
                failure, seen = await probe(self.device_id, port, seconds)
                if failure is None:
                    log.warning("%s: %s; reading it through pyasic from now on", self.device_id, err)
                    self._lean = None
                elif failure is Failure.TIMEOUT:
                    raise self._error(failure, f"read: {err} ({seen})") from None
            except DeviceError as err:
                if err.failure is Failure.TIMEOUT:
                    raise
            else:
                state = self._traits.lean_state
                if state is not None and not (poll.hashrate_ths or 0.0) > 0.0:
                    poll = dataclasses.replace(poll, is_mining=await self._query(state, "read"))
                return poll
        return _telemetry(await self._get_data(READ_ITEMS, "read"))

    async def _get_data(self, items: Iterable[str], action: str) -> Any:
        items = list(items)
        data = await self._call(action, self._miner.get_data(include=items), healthy=Failure.GARBAGE)
        numbers = [getattr(data, name) for name in NUMBERS if name in items]
        if numbers and all(number is None for number in numbers):
            # How pyasic reports a refused connection, undecodable bytes, or (Whatsminer) a
            # failed read: every field None.
            raise await self._diagnose(action, "the miner gave no data", healthy=Failure.GARBAGE)
        return data

    async def _command(
        self, action: str, call: Callable[[], Awaitable[bool | None]], *, false_is_unconfirmed: bool = False
    ) -> None:
        """Send one command. ``false_is_unconfirmed``: a False from pyasic means the firmware
        answered OK with another setting than asked; the read-back then judges (IGNORED)."""
        if self._traits.before_command is not None:
            self._traits.before_command(self._miner)
        if await self._call(action, call(), healthy=Failure.REFUSED) is False and not false_is_unconfirmed:
            raise await self._diagnose(action, "pyasic returned False", healthy=Failure.REFUSED)

    async def _query(self, query: Query, action: str) -> Any:
        """One firmware query (pyasic_queries) under the driver's deadline and failure mapping."""
        raw = await self._call(f"{action}: {query.name}", query.call(self._miner), healthy=Failure.GARBAGE)
        return query.parse(raw)

    async def _read_state(self, action: str) -> _State:
        """What the firmware says about its boards, and the draw, for a sleep or wake read-back."""
        data = await self._get_data(STATE_ITEMS, f"{action} read-back")
        query = self._traits.state_query
        running = await self._query(query, f"{action} read-back") if query is not None else None
        if running is None and self._traits.reports_mining and query is None:
            running = None if data.is_mining is None else bool(data.is_mining)
        return _State(_float(data.wattage), _float(data.hashrate), running)

    async def _confirm(
        self,
        action: str,
        read: Callable[[], Awaitable[T]],
        done: Callable[[T], bool],
        describe: Callable[[T], str],
    ) -> T:
        """Re-read until ``done``; a miner that said OK and never shows it IGNORED the command."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadlines.confirm_s
        while True:
            data = await read()
            if done(data):
                return data
            if loop.time() >= deadline:
                raise self._error(
                    Failure.IGNORED,
                    f"{action}: the firmware said OK, but after {self._deadlines.confirm_s:g} s {describe(data)}",
                )
            await asyncio.sleep(self._deadlines.poll_s)

    async def _diagnose(self, action: str, symptom: str, *, healthy: Failure) -> DeviceError:
        port, seconds = probe_port(self._miner), self._deadlines.call_s
        return await diagnose(self.device_id, action, symptom, port=port, healthy=healthy, seconds=seconds)

    def _error(self, failure: Failure, detail: str) -> DeviceError:
        return DeviceError(self.device_id, failure, detail)

    # -- what the readings mean -----------------------------------------------------------------

    @property
    def _asleep_below(self) -> float:
        """A draw under this is the sleep draw of boards and fans, whatever the setting."""
        return self._capability.min_watts * ASLEEP_BELOW_SHARE_OF_MIN

    def _mining(self, poll: Telemetry) -> bool | None:
        if self._traits.reports_mining:
            return bool(poll.is_mining)
        # LuxOS: pyasic says True even while the miner sleeps; hashrate tells the truth.
        return None if poll.hashrate_ths is None else poll.hashrate_ths > 0.0


    # -- capability -----------------------------------------------------------------------------

    async def _learn_capability(self, nameplate_watts: float | None) -> MinerCapability:
        """The firmware's own word first (profiles, constraints, its power limit); then the
        model table; then, on/off only, the operator's nameplate or what the miner reads."""
        control = self._traits.control
        if control is PowerControl.PROFILES:
            profiles = await self._profile_watts()
            if profiles:
                return MinerCapability(
                    control, profiles[0], profiles[-1], profiles_watts=profiles, source=CapabilitySource.FIRMWARE
                )
            log.warning("%s: the %s firmware lists no profiles; sleep and wake only", self.device_id, self.firmware)
            control = PowerControl.ON_OFF
        known = power_range_for(self._model)
        if control is PowerControl.WATTS:
            learned = await self._firmware_range(known, nameplate_watts)
            if learned is not None:
                return learned
        if known is not None:
            return MinerCapability(control, *known, source=CapabilitySource.MODEL_TABLE)
        if nameplate_watts:
            return MinerCapability(
                PowerControl.ON_OFF, nameplate_watts, nameplate_watts, source=CapabilitySource.NAMEPLATE
            )
        # Nothing better: only sleep and wake, at what it is set to or draws now while hashing.
        # Asleep, its draw says nothing of what it draws awake: then count it as a large unit.
        data = await self._get_data(("wattage_limit", "wattage", "hashrate"), "capability")
        high = max(_float(data.wattage_limit) or 0.0, _float(data.wattage) or 0.0)
        hashing = data.hashrate is not None and float(data.hashrate) > 0.0
        source = CapabilitySource.READING
        if not hashing or high <= 0:
            high, source = UNKNOWN_MINER_WATTS, CapabilitySource.DEFAULT
        log.warning(
            "%s: no power range known for model %r; on/off at %.0f W (%s); give max_kw in the site file",
            self.device_id, self._model, high, source,
        )
        return MinerCapability(PowerControl.ON_OFF, high, high, source=source)

    async def _firmware_range(
        self, known: tuple[float, float] | None, nameplate_watts: float | None
    ) -> MinerCapability | None:
        """The watts range the firmware reports, or None where it does not say."""
        watts = PowerControl.WATTS
        query = self._traits.range_query
        if query is not None:
            try:
                learned: tuple[float, float] | None = await self._query(query, "capability")
            except DeviceError as err:
                if err.failure not in (Failure.REFUSED, Failure.GARBAGE):
                    raise  # the miner is not answering at all: no capability can be learned
                log.warning("%s: %s; falling back to the model table", self.device_id, err.detail)
                return None
            return None if learned is None else MinerCapability(watts, *learned, source=CapabilitySource.FIRMWARE)
        if self._traits.range_from_limit:
            # The limit reads the factory ceiling until lowered. A lowered one (a restart after a
            # curtailment) is widened to the nameplate: the operator's, else the model table's.
            data = await self._get_data(("wattage_limit", "wattage"), "capability")
            reported = _float(data.wattage_limit) or 0.0
            if reported <= 0:
                return None  # "Power Limit" 0: this firmware does not limit power
            ceiling, source = reported, CapabilitySource.FIRMWARE
            for plate, plate_source in ((nameplate_watts, CapabilitySource.NAMEPLATE),
                                        (known[1] if known else None, CapabilitySource.MODEL_TABLE)):
                if plate is not None and plate > ceiling:
                    ceiling, source = plate, plate_source
            floor = known[0] if known else ceiling * WHATSMINER_FLOOR_SHARE
            return MinerCapability(watts, floor, ceiling, source=source)
        return None

    async def _profile_watts(self) -> tuple[float, ...]:
        """The firmware's preset powers, ascending (from pyasic's generic preset config)."""
        config = await self._call("profiles", self._miner.get_config(), healthy=Failure.GARBAGE)
        presets = getattr(config.mining_mode, "available_presets", None) or []
        return tuple(sorted({float(p.power) for p in presets if p.power is not None}))


@dataclass(frozen=True, slots=True)
class _State:
    """A sleep or wake read-back: the draw, the hashrate, and whether the boards run."""

    watts: float | None
    hashrate_ths: float | None
    running: bool | None

    def describe(self) -> str:
        said = {True: "its boards run", False: "its boards are stopped", None: "it does not say"}[self.running]
        return f"{said}, it draws {self.watts} W and hashes {self.hashrate_ths} TH/s"


def _telemetry(data: Any) -> Telemetry:
    """pyasic's MinerData as a poll, in the same terms as the lean path's."""
    return Telemetry(
        watts=_float(data.wattage),
        limit_watts=_float(data.wattage_limit),
        hashrate_ths=_float(data.hashrate),
        temperatures_c=tuple(_board_temperatures(data.hashboards)),
        fans_rpm=tuple(int(fan.speed) for fan in data.fans if fan.speed is not None),
        errors=tuple(_error_text(error) for error in data.errors),
        is_mining=data.is_mining,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _board_temperatures(hashboards: Iterable[Any]) -> Iterable[float]:
    """One temperature per board: the chips where reported (what thermal limits are about)."""
    for board in hashboards:
        celsius = board.chip_temp if board.chip_temp is not None else board.temp
        if celsius is not None:
            yield float(celsius)


def _error_text(error: Any) -> str:
    return str(getattr(error, "error_message", None) or error)
