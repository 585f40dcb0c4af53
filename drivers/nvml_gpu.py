"""Every GPU of one host through NVML (``nvidia-ml-py``), keyed by UUID.

All NVML calls run on one dedicated worker thread (:class:`~.nvml_worker.BlockingWorker`),
each driver operation on one GPU with its own deadline; a call that hangs leaves its thread
behind and the next one gets a fresh thread, so one sick GPU cannot block the rest.

Errors by class (DESIGN.md, "GPUs through NVML"; the mapping is in :mod:`.nvml_failures`):

- NotSupported / FunctionNotFound: that field is ``None`` for that card from then on; it is
  not asked again.
- NoPermission / InvalidArgument on setting the limit: logged once with what to do, the card's
  ``cap_settable`` turns False (the loop then drives it through its jobs only), and every later
  set is refused at once with ``Failure.REFUSED``.
- GpuIsLost / ResetRequired: the card is quarantined: ``Failure.NO_ANSWER`` (the loop counts it
  at its maximum) until a re-probe after a growing backoff finds it again.
- Unknown / Timeout, or a call past its deadline: ``Failure.TIMEOUT``, retried after a backoff.
- LibraryNotFound / DriverNotLoaded at start: :class:`NvmlUnavailable`, "no NVIDIA driver".

Setting a limit uses ``nvmlDeviceSetPowerManagementLimit``, not the ``_v2`` setter, whose
binding ignores the return code in 13.615.71; the limit is read back and a mismatch is
``Failure.IGNORED``. The read-backs are optional: where ``nvmlDeviceGetEnforcedPowerLimit`` is
missing, the management limit stands for it (:meth:`NvmlGpus.limit_read_back` says which).
Limits do not survive a reboot or a GPU reset: the caller re-applies them
(:meth:`NvmlGpus.restore_defaults` puts every card back at its default).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pynvml

from wattshift.model.gpu import GpuLimits, GpuReading
from wattshift.model.miner import Failure

from .base import DeviceError
from .nvml_calls import probe, read_fields, set_and_read_back
from .nvml_failures import Remedy, describe, failure_for, remedy_for
from .nvml_worker import BlockingWorker, CallTimeout

log = logging.getLogger(__name__)

GpuSelection = Literal["all"] | Sequence[int | str]


class NvmlUnavailable(DeviceError):
    """NVML cannot be used on this host at all (no library, or the kernel driver not loaded)."""


def energy_delta_joules(before: float | None, after: float | None) -> float | None:
    """Joules used between two readings of the energy counter; ``None`` if either is missing
    or the counter went backwards (the driver was reloaded and the counter restarted)."""
    if before is None or after is None or after < before:
        return None
    return after - before


def average_watts(before: float | None, after: float | None, seconds: float) -> float | None:
    """Mean draw between two energy readings ``seconds`` apart (steadier than one sample)."""
    joules = energy_delta_joules(before, after)
    if joules is None or seconds <= 0:
        return None
    return joules / seconds


@dataclass
class _Card:
    """What the driver knows about one managed GPU between calls."""

    uuid: str
    index: int = -1
    model: str | None = None
    handle: Any = None  # None: must be found again by UUID (lost, or not seen yet)
    limits: GpuLimits | None = None
    unsupported: set[str] = field(default_factory=set)
    cap_settable: bool = True
    set_refusal: DeviceError | None = None  # a permanent answer to "set the limit"
    down: DeviceError | None = None  # quarantined or backing off: the answer until retry_at
    retry_at: float = 0.0
    backoff_s: float = 0.0


class NvmlGpus:
    """The GPUs of this host, as the control loop sees them (implements ``GpuDriver``)."""

    def __init__(
        self,
        gpus: GpuSelection = "all",
        *,
        call_timeout_seconds: float = 5.0,
        name: str = "nvml",
        retry_backoff_seconds: float = 2.0,
        quarantine_seconds: float = 30.0,
        max_backoff_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(gpus, str):
            if gpus != "all":
                raise ValueError(f"gpus: {gpus!r} is not 'all' or a list of indices or UUIDs")
            selection: list[int | str] | None = None
        else:
            selection = list(gpus)
            if not selection:
                raise ValueError("gpus: the list is empty (use 'all' for every GPU)")
            for item in selection:
                bad_int = isinstance(item, int) and (isinstance(item, bool) or item < 0)
                if bad_int or not isinstance(item, int | str):
                    raise ValueError(f"gpus: {item!r} is neither an index (0, 1, ...) nor a UUID")
        for label, value in (
            ("call_timeout_seconds", call_timeout_seconds),
            ("retry_backoff_seconds", retry_backoff_seconds),
            ("quarantine_seconds", quarantine_seconds),
            ("max_backoff_seconds", max_backoff_seconds),
        ):
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{label}: {value!r} must be a positive number of seconds")
        self.name = name
        self._selection = selection
        self._retry_s = retry_backoff_seconds
        self._quarantine_s = quarantine_seconds
        self._max_backoff_s = max_backoff_seconds
        self._clock = clock
        self._worker = BlockingWorker(f"{name}-worker", call_timeout_seconds)
        self._cards: dict[str, _Card] = {}
        self._started = False
        self._permission_logged = False
        # Indices that could not be probed (a lost card has no readable UUID): tried again
        # on later reads, after the quarantine backoff.
        self._pending: set[int] = set()
        self._pending_retry_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> list[str]:
        if self._started:
            return list(self._cards)
        try:
            await self._worker.call(pynvml.nvmlInit, "nvmlInit")
        except pynvml.NVMLError as exc:
            if remedy_for(exc) is Remedy.NO_DRIVER:
                raise NvmlUnavailable(
                    self.name,
                    Failure.NO_ANSWER,
                    f"no NVIDIA driver on this host ({describe(exc)}): install the NVIDIA "
                    "driver (libnvidia-ml.so.1) and load its kernel module, or remove the "
                    "GPUs from the site file",
                ) from exc
            raise DeviceError(self.name, failure_for(remedy_for(exc)), describe(exc)) from exc
        except CallTimeout as exc:
            raise DeviceError(self.name, Failure.TIMEOUT, str(exc)) from exc
        self._started = True
        try:
            count = await self._worker.call(pynvml.nvmlDeviceGetCount, "nvmlDeviceGetCount")
        except (pynvml.NVMLError, CallTimeout) as exc:
            failure = (
                Failure.TIMEOUT if isinstance(exc, CallTimeout) else failure_for(remedy_for(exc))
            )
            raise DeviceError(self.name, failure, f"counting the GPUs: {_why(exc)}") from exc
        wanted: list[int | str] = list(range(count)) if self._selection is None else self._selection
        for item in wanted:
            if isinstance(item, int) and item >= count:
                raise ValueError(f"gpus: index {item} does not exist (this host has {count} GPUs)")
        for item in wanted:
            await self._discover(item)
        return list(self._cards)

    async def _discover(self, item: int | str) -> None:
        """Find one GPU, learn its UUID, model and constraints. A GPU named by UUID that cannot
        be reached is kept, quarantined; one named by index cannot be keyed and is skipped."""
        if isinstance(item, str) and item in self._cards:
            return
        try:
            found = await self._worker.call(lambda: probe(item), f"probe GPU {item}")
        except (pynvml.NVMLError, CallTimeout) as exc:
            if isinstance(item, int):
                if item not in self._pending:
                    log.warning("%s: GPU %d not managed yet: %s", self.name, item, _why(exc))
                self._pending.add(item)
                self._pending_retry_at = self._clock() + self._quarantine_s
                return
            card = self._cards.setdefault(item, _Card(uuid=item))
            self._fail(card, exc)
            log.warning("%s: GPU %s not reachable at start: %s", self.name, item, _why(exc))
            return
        if isinstance(item, int):
            self._pending.discard(item)
        card = self._cards.setdefault(found["uuid"], _Card(uuid=found["uuid"]))
        card.index, card.model, card.handle = found["index"], found["model"], found["handle"]
        card.limits = found["limits"]
        card.unsupported |= found["unsupported"]

    async def close(self) -> None:
        if self._started:
            self._started = False
            try:
                await self._worker.call(pynvml.nvmlShutdown, "nvmlShutdown")
            except (pynvml.NVMLError, CallTimeout) as exc:
                log.debug("%s: nvmlShutdown: %s", self.name, _why(exc))
        self._worker.close()

    # --- reading ------------------------------------------------------------------------------

    async def read_all(self) -> Mapping[str, GpuReading | DeviceError]:
        if self._pending and self._clock() >= self._pending_retry_at:
            for index in sorted(self._pending):
                await self._discover(index)
        # One card after another: they share one thread, and a stuck card's deadline must not
        # run down the others' while they wait in its queue.
        return {uuid: await self._read(card) for uuid, card in self._cards.items()}

    async def _read(self, card: _Card) -> GpuReading | DeviceError:
        if card.down is not None and self._clock() < card.retry_at:
            return card.down
        handle, skip = card.handle, frozenset(card.unsupported)
        uuid = card.uuid
        try:
            if handle is None:  # re-probe a quarantined card by its UUID
                found = await self._worker.call(lambda: probe(uuid), f"re-probe GPU {uuid}")
                card.index, card.model, card.handle = (
                    found["index"],
                    found["model"],
                    found["handle"],
                )
                card.limits = card.limits or found["limits"]
                card.unsupported |= found["unsupported"]
                handle, skip = card.handle, frozenset(card.unsupported)
            read = await self._worker.call(lambda: read_fields(handle, skip), f"read GPU {uuid}")
        except (pynvml.NVMLError, CallTimeout) as exc:
            return self._fail(card, exc)
        self._recovered(card)
        for name in read.unsupported - card.unsupported:
            log.info("%s: GPU %s does not support %s; not asked again", self.name, uuid, name)
        card.unsupported |= read.unsupported
        v = read.values
        return GpuReading(
            uuid=uuid,
            index=card.index,
            model=card.model,
            watts=_watts(v.get("watts")),
            limit_watts=_watts(v.get("limit")),
            enforced_limit_watts=_watts(v.get("enforced_limit")),
            limits=card.limits,
            energy_joules=_watts(v.get("energy")),  # mJ -> J: the same factor
            utilisation_pct=v.get("utilisation"),
            temperature_c=v.get("temperature"),
            processes=v.get("processes", ()),
            cap_settable=card.cap_settable,
        )

    # --- setting the limit --------------------------------------------------------------------

    async def set_power_limit(self, uuid: str, watts: float) -> float:
        card = self._card(uuid)
        if not isinstance(watts, int | float) or not math.isfinite(watts):
            raise DeviceError(uuid, Failure.REFUSED, f"watts: {watts!r} is not a finite number")
        if card.set_refusal is not None:
            raise card.set_refusal
        if card.down is not None and self._clock() < card.retry_at:
            raise card.down
        if card.handle is None:
            reading = await self._read(card)  # re-probe, and learn the constraints
            if isinstance(reading, DeviceError):
                raise reading
        limits = card.limits
        if limits is not None and not limits.min_watts <= watts <= limits.max_watts:
            raise DeviceError(
                uuid,
                Failure.REFUSED,
                f"{watts:g} W is outside this card's range {limits.min_watts:g}-"
                f"{limits.max_watts:g} W ({card.model})",
            )
        return await self._apply(card, watts)

    async def restore_limit(self, uuid: str, watts: float) -> float:
        """Put a limit back even on a card whose later sets are refused (``nvml_check`` after a
        failed try): one set and its read-back, with no policy of its own."""
        card = self._card(uuid)
        if card.handle is None:
            reading = await self._read(card)
            if isinstance(reading, DeviceError):
                raise reading
        return await self._apply(card, watts)

    def limit_read_back(self, uuid: str) -> str:
        """Which limit a set on this card is checked against: ``enforced`` (the one the card
        applies), ``management`` (no enforced-limit call here) or ``none`` (neither readable)."""
        missing = self._card(uuid).unsupported
        if "enforced_limit" not in missing:
            return "enforced"
        return "management" if "limit" not in missing else "none"

    async def _apply(self, card: _Card, watts: float) -> float:
        uuid, handle, skip = card.uuid, card.handle, frozenset(card.unsupported)
        milliwatts = round(watts * 1000)
        try:
            back = await self._worker.call(
                lambda: set_and_read_back(handle, milliwatts, skip), f"set the limit of GPU {uuid}"
            )
        except (pynvml.NVMLError, CallTimeout) as exc:
            raise self._set_failed(card, watts, exc) from exc
        self._recovered(card)
        for name in back.unsupported - card.unsupported:
            log.info("%s: GPU %s does not support %s; not asked again", self.name, uuid, name)
        card.unsupported |= back.unsupported
        held, enforced = back.held_mw, back.enforced_mw
        # 1 W of slack: a card may keep the limit at its own granularity.
        if held is not None and abs(held - milliwatts) > 1000:
            raise DeviceError(
                uuid, Failure.IGNORED, f"asked for {watts:g} W, said OK, but holds {held / 1000:g} W"
            )
        if held is None and enforced is not None and enforced > milliwatts + 1000:
            # Only the enforced limit is readable, and it may sit below the management limit
            # (a system cap): it proves the set ignored only when it stays above what was asked.
            raise DeviceError(
                uuid, Failure.IGNORED, f"asked for {watts:g} W, said OK, but enforces {enforced / 1000:g} W"
            )
        if enforced is not None:
            return enforced / 1000
        if held is not None:
            return held / 1000  # no enforced-limit call: the management limit is what it holds
        log.warning("%s: GPU %s: set %g W, but the card reads back no limit", self.name, uuid, watts)
        return float(watts)

    def _set_failed(self, card: _Card, watts: float, exc: BaseException) -> DeviceError:
        remedy = remedy_for(exc) if not isinstance(exc, CallTimeout) else Remedy.RETRY
        if remedy is Remedy.CONFIGURATION:
            card.cap_settable = False
            if isinstance(exc, pynvml.NVMLError_NoPermission):
                detail = (
                    f"no permission to set the power limit ({describe(exc)}): run wattshift "
                    "as root, or grant it the right to set GPU power limits; until then this "
                    "GPU is driven through its jobs only"
                )
                once = not self._permission_logged  # one host, one cause: say it once
                self._permission_logged = True
            else:
                detail = (
                    f"the card refused {watts:g} W as invalid ({describe(exc)}) although its "
                    "constraints allow it; check the card's power settings (nvidia-smi -q -d "
                    "POWER); until then this GPU is driven through its jobs only"
                )
                once = True
            if once:
                log.error("%s: GPU %s: %s", self.name, card.uuid, detail)
            card.set_refusal = DeviceError(card.uuid, Failure.REFUSED, detail)
            return card.set_refusal
        if remedy is Remedy.DISABLE_FIELD:
            card.cap_settable = False
            card.set_refusal = DeviceError(
                card.uuid,
                Failure.UNSUPPORTED,
                f"this card cannot set its power limit ({describe(exc)})",
            )
            log.warning("%s: GPU %s: %s", self.name, card.uuid, card.set_refusal.detail)
            return card.set_refusal
        return self._fail(card, exc)

    async def restore_defaults(self) -> dict[str, float | DeviceError]:
        """Every settable card back at its default limit (on shutdown, or before handing over)."""
        done: dict[str, float | DeviceError] = {}
        for uuid, card in self._cards.items():
            if card.limits is None or not card.cap_settable:
                continue
            try:
                done[uuid] = await self.set_power_limit(uuid, card.limits.default_watts)
            except DeviceError as exc:
                done[uuid] = exc
        return done

    # --- bookkeeping --------------------------------------------------------------------------

    def _card(self, uuid: str) -> _Card:
        try:
            return self._cards[uuid]
        except KeyError:
            known = ", ".join(self._cards) or "none (was start() called?)"
            raise ValueError(f"uuid: {uuid!r} is not a GPU this driver manages ({known})") from None

    def _fail(self, card: _Card, exc: BaseException) -> DeviceError:
        """Turn a failed call into the card's answer until its next try, with a backoff."""
        remedy = Remedy.RETRY if isinstance(exc, CallTimeout) else remedy_for(exc)
        if remedy is Remedy.QUARANTINE:
            card.handle = None  # found again by UUID: a reset card may have a new handle
            base = self._quarantine_s
        else:
            base = self._retry_s
        first = card.down is None
        card.backoff_s = base if first else min(card.backoff_s * 2, self._max_backoff_s)
        card.retry_at = self._clock() + card.backoff_s
        failure = failure_for(remedy) if remedy is not Remedy.DISABLE_FIELD else Failure.REFUSED
        what = "quarantined" if remedy is Remedy.QUARANTINE else "retrying"
        card.down = DeviceError(
            card.uuid, failure, f"{_why(exc)}; {what}, next try in {card.backoff_s:g} s"
        )
        if first:
            log.warning("%s: GPU %s: %s", self.name, card.uuid, card.down.detail)
        return card.down

    def _recovered(self, card: _Card) -> None:
        if card.down is not None:
            log.warning("%s: GPU %s answers again", self.name, card.uuid)
        card.down, card.backoff_s, card.retry_at = None, 0.0, 0.0


# --- the calls that run on the worker thread (blocking; no driver state touched) --------------


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, CallTimeout) else describe(exc)


def _watts(milli: int | None) -> float | None:
    return None if milli is None else milli / 1000
