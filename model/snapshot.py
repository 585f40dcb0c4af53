"""The site as the control loop sees it at one instant: immutable, built once per tick.

Drivers produce readings; :func:`wattshift.daemon.control.observe.build_snapshot` turns them into a
:class:`SiteSnapshot`; policies read it and nothing else. Every power here is in watts.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType, SimpleNamespace

from .forecast import ForecastStep
from .gpu import GpuReading
from .jobs import NO_SWITCHING_COST, FlexTier, JobState, SwitchingCost
from .miner import Failure, MinerCapability, MinerReading
from .specs import NO_MINER_SWITCHING, MinerSwitching

# A sleeping miner's control board and fans, when no reading says otherwise.
IDLE_WATTS = 15.0


class DeviceClass(enum.StrEnum):
    MINER = "miner"
    GPU = "gpu"


@dataclass(frozen=True, slots=True)
class EfficiencyCurve:
    """``hashrate = nominal_ths * (watts / nominal_watts) ** (1 / exponent)`` (DESIGN.md §4)."""

    nominal_watts: float
    nominal_ths: float
    exponent: float = 2.0

    def ths_at(self, watts: float) -> float:
        if watts <= 0:
            return 0.0
        return self.nominal_ths * float((watts / self.nominal_watts) ** (1.0 / self.exponent))

    @property
    def joules_per_th(self) -> float:
        return self.nominal_watts / self.nominal_ths


@dataclass(frozen=True, slots=True, init=False)
class MinerState:
    """One miner at this tick: what it said, what it can do, and what we must assume."""

    device_id: str
    circuit: str
    model: str | None
    capability: MinerCapability
    curve: EfficiencyCurve
    reading: MinerReading | None  # None: no answer this tick
    failure: Failure | None
    max_watts: float  # the most it can draw, whatever we believe
    state_since: float | None = None  # loop-clock time of the last on/off change we made
    # Told to wake and not yet seen running: real boards take minutes to come up, and until
    # then the miner must be counted as if it were already at its limit.
    waking: bool = False
    # Boot time and draw, wear per start, minimum up/down times (model/specs.py).
    switching: MinerSwitching = NO_MINER_SWITCHING

    # Derived once, from the fields above, when the state is made (replace() makes a new one):
    # the policy and the sequencer ask these of every load several times a decision.
    _controllable: bool = field(init=False, repr=False, compare=False)
    _is_on: bool = field(init=False, repr=False, compare=False)
    _idle_watts: float = field(init=False, repr=False, compare=False)
    _worst_case_watts: float = field(init=False, repr=False, compare=False)

    kind = DeviceClass.MINER

    def __init__(self, device_id: str, circuit: str, model: str | None, capability: MinerCapability,
                 curve: EfficiencyCurve, reading: MinerReading | None, failure: Failure | None, max_watts: float,
                 state_since: float | None = None, waking: bool = False,
                 switching: MinerSwitching = NO_MINER_SWITCHING) -> None:
        # Written out, not the dataclass's: a frozen one goes through object.__setattr__ per
        # field, and a snapshot makes one per miner every tick (10,000 on a large site); each
        # slot is filled through its descriptor, as Target does (policies/base.py).
        _set = _MINER_SLOTS
        _set.device_id(self, device_id)
        _set.circuit(self, circuit)
        _set.model(self, model)
        _set.capability(self, capability)
        _set.curve(self, curve)
        _set.reading(self, reading)
        _set.failure(self, failure)
        _set.max_watts(self, max_watts)
        _set.state_since(self, state_since)
        _set.waking(self, waking)
        _set.switching(self, switching)
        # As the properties below say: controllable, is_on, idle_watts, worst_case_watts.
        on = waking or self.reads_on
        measured = reading.watts if reading is not None else None
        _set._controllable(self, reading is not None and failure is None)
        _set._is_on(self, on)
        _set._idle_watts(self, measured if not on and measured is not None else IDLE_WATTS)
        if reading is None or failure is not None:
            worst = max_watts
        elif not on:
            worst = measured if measured is not None else max_watts
        else:
            limit = reading.limit_watts if reading.limit_watts is not None else max_watts
            worst = max(measured if measured is not None else max_watts, min(limit, max_watts))
        _set._worst_case_watts(self, worst)

    @property
    def controllable(self) -> bool:
        return self._controllable

    @property
    def limit_watts(self) -> float | None:
        return self.reading.limit_watts if self.reading is not None else None

    @property
    def idle_watts(self) -> float:
        """What it draws asleep: as measured when it sleeps now, else the usual board draw."""
        return self._idle_watts

    @property
    def measured_watts(self) -> float | None:
        return self.reading.watts if self.reading is not None else None

    @property
    def is_on(self) -> bool:
        """Mining or about to: a miner told to wake counts as on (and at its limit) already."""
        return self._is_on

    @property
    def reads_on(self) -> bool:
        """Mining, by the best evidence we have (an unknown miner counts as on)."""
        if self.reading is None:
            return True
        if self.reading.mining is False:
            return False
        return (self.reading.watts or 0.0) > self.capability.min_watts * 0.5

    @property
    def worst_case_watts(self) -> float:
        """What this miner may draw before we next hear from it (DESIGN.md invariant 3).

        Unknown means the maximum. A miner that answers may still ramp up to its limit, and
        a miner still ramping down draws what it draws now.
        """
        return self._worst_case_watts

    @property
    def label(self) -> str:
        return f"{self.model or 'miner'} {self.device_id}"


# Each of MinerState's slots by name, to set it (MinerState.__init__).
_MINER_SLOTS = SimpleNamespace(**{f.name: MinerState.__dict__[f.name].__set__ for f in fields(MinerState)})


# -- GPU nodes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuJob:
    """The AI job on a GPU node, with what it is worth and what moving it costs."""

    job_id: str
    name: str
    state: JobState
    tier: FlexTier
    gpus: int
    value_usd_per_gpu_hour: float | None  # None: no rate known
    value_stale: bool = False  # a market rate gone stale never triggers a switch
    switching: SwitchingCost = NO_SWITCHING_COST
    min_run_seconds: float = 0.0

    @property
    def value_usd_per_hour(self) -> float | None:
        if self.value_usd_per_gpu_hour is None:
            return None
        return self.value_usd_per_gpu_hour * self.gpus

    @property
    def interruption_usd(self) -> float:
        """Stopping costs the penalty plus the work lost to checkpoint and restart."""
        rate = (self.value_usd_per_hour or 0.0) / 3600
        lost = self.switching.checkpoint_seconds + self.switching.restart_seconds
        return self.switching.penalty_usd + rate * lost


@dataclass(frozen=True, slots=True)
class GpuNodeState:
    """One GPU server: N cards behind one power supply, and the job on it (if any).

    The node is one load to the loop: its ``watts`` are the wall draw of the host plus its GPUs,
    a limit is a per-GPU power cap times N plus the host's busy draw, "off" is its job suspended
    or requeued. Jobs are admitted through wattshift (held until granted), so an idle or
    suspended node draws what it draws now; a running one may rise to its caps at any moment.
    """

    device_id: str
    circuit: str
    gpu_model: str | None
    gpu_count: int
    host_idle_watts: float
    host_max_watts: float
    gpu_idle_watts: float  # per card
    cap_min_watts: float  # per card (NVML constraints)
    cap_max_watts: float
    readings: tuple[GpuReading, ...]  # the cards that answered
    failure: Failure | None  # a card lost or the node unread: counted at its maximum
    job: GpuJob | None
    state_since: float | None = None
    waking: bool = False  # a start/resume was sent and the job has not been seen running

    # Derived once, from the fields above, when the state is made (replace() makes a new one):
    # each reads every card, and the policy and the sequencer ask them of every node.
    _controllable: bool = field(init=False, repr=False, compare=False)
    _cap_watts: float | None = field(init=False, repr=False, compare=False)
    _measured_watts: float | None = field(init=False, repr=False, compare=False)
    _is_on: bool = field(init=False, repr=False, compare=False)
    _idle_watts: float = field(init=False, repr=False, compare=False)
    _worst_case_watts: float = field(init=False, repr=False, compare=False)

    kind = DeviceClass.GPU

    def __post_init__(self) -> None:
        readings, setattr_ = self.readings, object.__setattr__
        complete = self.failure is None and len(readings) == self.gpu_count
        # One pass over the cards, the sums added in their order (as sum() and max() would).
        cap: float | None = None  # the highest cap in force
        busy = drawn = 0.0  # utilisation (fractions) and watts, summed
        every_read = bool(readings)
        for r in readings:
            card_cap = r.enforced_limit_watts or r.limit_watts
            if card_cap is not None and (cap is None or card_cap > cap):
                cap = card_cap
            if r.watts is None:
                every_read = False
            busy += (r.utilisation_pct or 0.0) / 100
            drawn += r.watts or 0.0
        measured = None
        if every_read:
            host = self.host_idle_watts + (self.host_max_watts - self.host_idle_watts) * busy / len(readings)
            measured = host + drawn
        on = self.waking or self.reads_on
        setattr_(self, "_controllable", complete)
        setattr_(self, "_cap_watts", cap)
        setattr_(self, "_measured_watts", measured)
        setattr_(self, "_is_on", on)
        setattr_(self, "_idle_watts", measured if not on and measured is not None
                 else self.host_idle_watts + self.gpu_count * self.gpu_idle_watts)
        # As worst_case_watts says: a card lost or unread counts at its maximum, an idle node
        # at what it draws, a running one at the most of its draw and its caps.
        if self.failure is not None or len(readings) < self.gpu_count:
            lost = self.gpu_count - len(readings)
            seen = sum(max(r.watts or 0.0, r.enforced_limit_watts or self.cap_max_watts) for r in readings)
            worst = self.host_max_watts + seen + lost * self.cap_max_watts
        elif measured is None:
            worst = self.max_watts
        elif not on:
            worst = measured
        else:
            worst = max(measured, self.watts_at_cap(min(cap or self.cap_max_watts, self.cap_max_watts)))
        setattr_(self, "_worst_case_watts", worst)

    @property
    def label(self) -> str:
        return f"{self.gpu_count}x {self.gpu_model or 'GPU'} {self.device_id}"

    @property
    def firm(self) -> bool:
        return self.job is not None and self.job.tier is FlexTier.FIRM

    @property
    def controllable(self) -> bool:
        """Every card answered. Firm load is controllable only in that it may be started:
        the policy and the sequencer never curtail it."""
        return self._controllable

    @property
    def cap_watts(self) -> float | None:
        """The per-card cap in force (the highest, to be safe)."""
        return self._cap_watts

    @property
    def limit_watts(self) -> float | None:
        cap = self._cap_watts
        return None if cap is None else self.watts_at_cap(cap)

    def watts_at_cap(self, cap_watts: float) -> float:
        return self.host_max_watts + self.gpu_count * cap_watts

    def cap_for(self, node_watts: float) -> float:
        """The per-card cap that keeps the node at ``node_watts``."""
        return (node_watts - self.host_max_watts) / self.gpu_count

    @property
    def idle_watts(self) -> float:
        """What it draws with no job running: as measured when idle now, else the estimate."""
        return self._idle_watts

    @property
    def max_watts(self) -> float:
        return self.watts_at_cap(self.cap_max_watts)

    @property
    def measured_watts(self) -> float | None:
        """Cards as read, plus the host estimated from their utilisation (NVML cannot see it)."""
        return self._measured_watts

    @property
    def reads_on(self) -> bool:
        return self.job is not None and self.job.state is JobState.RUNNING

    @property
    def is_on(self) -> bool:
        return self._is_on

    @property
    def worst_case_watts(self) -> float:
        """What this node may draw before we next hear from it (DESIGN.md invariant 3)."""
        return self._worst_case_watts


# What the loop, the sequencer and the metrics need from any device; both kinds provide it.
Load = MinerState | GpuNodeState


@dataclass(frozen=True, slots=True)
class Prices:
    hashprice_usd_per_ph_day: float | None
    power_usd_per_mwh: float | None
    hashprice_stale: bool = False
    power_stale: bool = False
    # The market rate per GPU model, for display and for jobs valued at the market.
    gpu_rates_usd_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)
    gpu_rates_stale: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    at: datetime  # wall clock, for the journal and for schedule windows
    clock: float  # loop clock (monotonic seconds): dwell times are measured on it
    budget_watts: float  # the site limit in force, reserve already taken off
    circuit_limits: Mapping[str, float]
    circuit_parents: Mapping[str, str | None]
    miners: tuple[MinerState, ...]
    prices: Prices
    gpu_nodes: tuple[GpuNodeState, ...] = ()
    # The hours ahead, for a policy that asked for them (``forecast_seconds``): model/forecast.py.
    forecast: tuple[ForecastStep, ...] = ()
    _by_id: Mapping[str, Load] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", MappingProxyType({d.device_id: d for d in self.loads}))
        object.__setattr__(self, "circuit_limits", MappingProxyType(dict(self.circuit_limits)))
        object.__setattr__(self, "circuit_parents", MappingProxyType(dict(self.circuit_parents)))

    @property
    def loads(self) -> tuple[Load, ...]:
        """Every device the loop accounts for: miners, then GPU nodes."""
        return self.miners + self.gpu_nodes

    def load(self, device_id: str) -> Load:
        return self._by_id[device_id]

    def miner(self, device_id: str) -> MinerState:
        found = self._by_id[device_id]
        if not isinstance(found, MinerState):
            raise KeyError(f"{device_id} is not a miner")
        return found

    def effective_limits(self) -> dict[str, float]:
        """Circuit limits with the site's own limit replaced by the budget in force."""
        limits = dict(self.circuit_limits)
        limits["site"] = min(limits.get("site", self.budget_watts), self.budget_watts)
        return limits
