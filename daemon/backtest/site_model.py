"""A whole site as fast in-process state, for back-tests: no sockets, no clock, no threads.

The protocol simulators answer over the wire and tick against a wall clock; replaying a month
at 5-minute steps through them would take hours. This model keeps only what decides energy and
money, with the same numbers as :mod:`wattshift.simulators.physics` and the policies:

- a miner's draw follows its set point on a linear ramp (watts per second, as the miner
  simulator does); asleep it draws its board's sleep watts at once; it hashes on the policies'
  efficiency curve at its draw;
- switching is not free (the figures per model in :mod:`wattshift.model.specs`, overridable per
  miner group in the site file): a woken miner boots for ``boot_seconds``, drawing
  ``boot_watts`` and hashing nothing, then ramps to its set point; each start costs
  ``wear_usd_per_cycle`` (``Totals.wear_usd``, in the margin). A start within
  ``min_down_seconds`` of the last stop is refused (the miner stays asleep, counted in
  ``refused_starts``): that is physics. ``min_up_seconds`` is a rule the loop keeps but a limit
  overrides, so an earlier stop is carried out and counted (``min_up_breaks``);
- a GPU node draws its host's busy draw plus its cards at their cap while its job runs, and its
  idle draw otherwise; a running job earns its $/GPU-hour times the share of full speed its cap
  allows; a start costs ``restart_seconds`` of work at its rate, an interruption its checkpoint
  time and penalty (``switching_usd``);
- :meth:`SiteModel.advance` integrates energy, revenue and each circuit's highest draw over an
  interval; :meth:`SiteModel.snapshot` shows the site as the control loop would read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from wattshift.daemon.control.sequencer import Step
from wattshift.model.gpu import GpuLimits, GpuReading
from wattshift.model.jobs import FlexTier, JobState
from wattshift.model.limits import LimitTree
from wattshift.model.miner import MinerCapability, MinerReading, PowerControl
from wattshift.model.snapshot import (
    EfficiencyCurve,
    GpuJob,
    GpuNodeState,
    MinerState,
    Prices,
    SiteSnapshot,
)
from wattshift.model.specs import MinerSwitching
from wattshift.policies.ladders import gpu_speed_share

from .site import BacktestSite, GpuNodeCount

RAMP_WATTS_PER_S = 600.0  # the miner simulator's default ramp

# Step actions by what they do to a load; the sequencer may name GPU actions its own way.
_OFF = {"sleep", "suspend", "requeue", "stop"}
_ON = {"wake", "resume", "start"}


@dataclass(slots=True)
class SimMiner:
    device_id: str
    group: int  # index of its group in the site file: same model, circuit and switching
    circuit: str
    model: str
    curve: EfficiencyCurve
    capability: MinerCapability
    sleep_watts: float
    target: float
    switching: MinerSwitching
    sleeping: bool = False
    draw: float = 0.0
    state_since: float | None = None
    boot_left: float = 0.0  # seconds of boot still to go: drawing boot watts, hashing nothing
    started_at: float | None = None  # loop clock of the last start and stop, for min up/down
    stopped_at: float | None = None
    shown: tuple[tuple[float, float, bool, float, float | None], MinerState] | None = None  # last state read

    def setpoint(self) -> float:
        return self.sleep_watts if self.sleeping else self.target


@dataclass(slots=True)
class SimGpuNode:
    device_id: str
    circuit: str
    kind: GpuNodeCount
    cap: float
    job: GpuJob | None = None
    state_since: float | None = None

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.state is JobState.RUNNING

    @property
    def idle_watts(self) -> float:
        k = self.kind
        return k.host_idle_watts + k.gpus * k.gpu_idle_watts

    def draw(self) -> float:
        if not self.running:
            return self.idle_watts
        return self.kind.host_max_watts + self.kind.gpus * self.cap


@dataclass(slots=True)
class Totals:
    """What an interval (or a whole run) added up to."""

    seconds: float = 0.0
    miner_wh: float = 0.0
    gpu_wh: float = 0.0
    mining_usd: float = 0.0
    ai_usd: float = 0.0
    power_usd: float = 0.0
    switching_usd: float = 0.0
    miner_switches: int = 0  # on/off changes, both ways
    miner_starts: int = 0  # starts (wear cycles)
    wear_usd: float = 0.0  # their wear
    refused_starts: int = 0  # wakes within a miner's minimum down time: refused, it stays off
    min_up_breaks: int = 0  # stops within a miner's minimum up time (a limit may force them)
    gpu_starts: int = 0
    job_interruptions: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def energy_wh(self) -> float:
        return self.miner_wh + self.gpu_wh

    @property
    def revenue_usd(self) -> float:
        return self.mining_usd + self.ai_usd

    @property
    def margin_usd(self) -> float:
        return self.revenue_usd - self.power_usd - self.switching_usd - self.wear_usd

    def add(self, other: Totals) -> None:
        for name in ("seconds", "miner_wh", "gpu_wh", "mining_usd", "ai_usd", "power_usd", "switching_usd",
                     "miner_switches", "miner_starts", "wear_usd", "refused_starts", "min_up_breaks",
                     "gpu_starts", "job_interruptions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.violations.extend(other.violations)


class SiteModel:
    """The true state of a back-tested site. Power in watts, time in seconds on a loop clock."""

    def __init__(self, site: BacktestSite, *, grouped: bool = True) -> None:
        self.site = site
        # Identical miners in identical states are integrated once, and a miner whose state has
        # not changed shows the loop the same state object again; ``grouped=False`` does every
        # miner every time (the reference the grouped replay must equal).
        self.grouped = grouped
        self.tree = LimitTree(site.circuit_limits(), site.circuit_parents())
        self.miners: list[SimMiner] = []
        for g, group in enumerate(site.miners):
            kind = group.kind  # the model's row with the group's switching overrides
            spec = kind.spec
            cap = MinerCapability(PowerControl.WATTS, spec.min_watts, spec.max_watts)
            for n in range(group.count):
                # Every miner starts asleep (cold, as the demo does): a site powered up at
                # nominal may already be over a circuit before the first decision.
                self.miners.append(SimMiner(
                    f"m{g}-{n}", g, group.circuit, spec.model, kind.curve, cap, spec.sleep_watts,
                    target=spec.nominal_watts, switching=spec.switching, sleeping=True, draw=spec.sleep_watts,
                ))
        self.gpu_nodes: list[SimGpuNode] = [
            SimGpuNode(f"g{g}-{n}", group.circuit, group, cap=group.cap_max_w)
            for g, group in enumerate(site.gpu_nodes)
            for n in range(group.count)
        ]
        devices: list[SimMiner | SimGpuNode] = [*self.miners, *self.gpu_nodes]
        self._by_id = {d.device_id: d for d in devices}
        self._jobs = 0
        self.rate: float | None = None
        self.switches = Totals()  # counts and switching costs since the last advance

    # -- the outside world ----------------------------------------------------------------------

    def set_gpu_work(self, demand: int, rate: float | None) -> None:
        """``demand`` nodes have work (the first ones, in order); each job is worth ``rate``.

        A node that loses its work has finished its job: not an interruption.
        """
        self.rate = rate
        for index, node in enumerate(self.gpu_nodes):
            if index < demand:
                if node.job is None:
                    self._jobs += 1
                    k = node.kind
                    node.job = GpuJob(f"job-{self._jobs}", f"job-{self._jobs}", JobState.PENDING, k.tier,
                                      k.gpus, rate, switching=k.switching)
                elif node.job.value_usd_per_gpu_hour != rate:
                    node.job = _with(node.job, value_usd_per_gpu_hour=rate)
            elif node.job is not None:
                node.job = None

    # -- what the loop reads --------------------------------------------------------------------

    def snapshot(self, *, at: datetime, clock: float, budget_watts: float, prices: Prices) -> SiteSnapshot:
        return SiteSnapshot(
            at=at,
            clock=clock,
            budget_watts=budget_watts,
            circuit_limits=self.tree.limits,
            circuit_parents=self.tree.parents,
            miners=tuple(self._miner_state(m) for m in self.miners),
            prices=prices,
            gpu_nodes=tuple(self._node_state(n) for n in self.gpu_nodes),
        )

    def _miner_state(self, m: SimMiner) -> MinerState:
        if not self.grouped:
            return self._read_miner(m)
        key = (m.draw, m.target, m.sleeping, m.boot_left, m.state_since)
        if m.shown is None or m.shown[0] != key:
            m.shown = (key, self._read_miner(m))
        return m.shown[1]

    def _read_miner(self, m: SimMiner) -> MinerState:
        booting = m.boot_left > 0
        mining = not m.sleeping and not booting
        # Booting reads as the firmware says it: boards up, nothing hashed. Until it reads on (its
        # draw above half its minimum) the loop counts it waking, on at the limit it will climb to
        # (its worst case), as the live loop's memory does.
        waking = not m.sleeping and (booting or m.draw <= m.capability.min_watts * 0.5)
        reading = MinerReading(m.device_id, m.model, "sim", m.draw, m.target,
                               m.curve.ths_at(m.draw) if mining else 0.0, not m.sleeping, booting=booting)
        return MinerState(m.device_id, m.circuit, m.model, m.capability, m.curve, reading, None,
                          m.capability.max_watts, state_since=m.state_since, waking=waking,
                          switching=m.switching)

    def _node_state(self, node: SimGpuNode) -> GpuNodeState:
        k = node.kind
        running = node.running
        card = node.cap if running else k.gpu_idle_watts
        limits = GpuLimits(k.cap_min_w, k.cap_max_w, k.cap_max_w)
        readings = tuple(
            GpuReading(f"{node.device_id}-gpu{i}", i, k.gpu_model, card, node.cap, node.cap, limits,
                       None, 100.0 if running else 0.0, None)
            for i in range(k.gpus)
        )
        return GpuNodeState(
            device_id=node.device_id, circuit=node.circuit, gpu_model=k.gpu_model, gpu_count=k.gpus,
            host_idle_watts=k.host_idle_watts, host_max_watts=k.host_max_watts,
            gpu_idle_watts=k.gpu_idle_watts, cap_min_watts=k.cap_min_w, cap_max_watts=k.cap_max_w,
            readings=readings, failure=None, job=node.job, state_since=node.state_since,
        )

    # -- commands -------------------------------------------------------------------------------

    def apply(self, steps: Iterable[Step], clock: float) -> None:
        for step in steps:
            device = self._by_id[step.device_id]
            action = str(step.action.value)
            if isinstance(device, SimMiner):
                self._apply_miner(device, action, step.watts, clock)
            else:
                self._apply_gpu(device, action, step.watts, clock)

    def _apply_miner(self, m: SimMiner, action: str, watts: float, clock: float) -> None:
        cap = m.capability
        sw = m.switching
        if action in _OFF:
            if not m.sleeping:
                if m.started_at is not None and clock - m.started_at < sw.min_up_seconds - 1e-6:
                    self.switches.min_up_breaks += 1  # carried out: a limit may demand it
                m.sleeping = True
                m.boot_left = 0.0  # a boot cut short is a stop too
                m.draw = m.sleep_watts  # sleep cuts the hashboards at once
                m.state_since = m.stopped_at = clock
                self.switches.miner_switches += 1
            return
        if action in _ON and m.sleeping:
            if m.stopped_at is not None and clock - m.stopped_at < sw.min_down_seconds - 1e-6:
                self.switches.refused_starts += 1  # too soon after its stop: it stays asleep
                return
            m.sleeping = False
            m.boot_left = sw.boot_seconds
            if m.boot_left > 0:
                m.draw = sw.boot_watts
            m.state_since = m.started_at = clock
            self.switches.miner_switches += 1
            self.switches.miner_starts += 1
            self.switches.wear_usd += sw.wear_usd_per_cycle
        m.target = min(max(watts, cap.min_watts), cap.max_watts)

    def _apply_gpu(self, node: SimGpuNode, action: str, watts: float, clock: float) -> None:
        k = node.kind
        job = node.job
        if action in _OFF:
            if job is not None and node.running:
                rate = job.value_usd_per_hour or 0.0
                self.switches.switching_usd += (
                    job.switching.penalty_usd + rate * job.switching.checkpoint_seconds / 3600
                )
                self.switches.job_interruptions += 1
                back = JobState.SUSPENDED if job.tier is FlexTier.SUSPENDABLE else JobState.PENDING
                node.job = _with(job, state=back)
                node.state_since = clock
            return
        if watts > 0:
            node.cap = min(max((watts - k.host_max_watts) / k.gpus, k.cap_min_w), k.cap_max_w)
        if action in _ON and job is not None and not node.running:
            node.job = _with(job, state=JobState.RUNNING)
            node.state_since = clock
            # The work lost while it comes up, at the full rate (as the merit order counts it).
            self.switches.switching_usd += (job.value_usd_per_hour or 0.0) * job.switching.restart_seconds / 3600
            self.switches.gpu_starts += 1

    # -- time -----------------------------------------------------------------------------------

    def advance(self, seconds: float, *, hashprice: float, power_price: float, limits: Mapping[str, float]) -> Totals:
        """Move ``seconds`` on: integrate energy and money, and check every circuit's peak."""
        out, self.switches = self.switches, Totals()
        out.seconds = seconds
        peak = dict.fromkeys(self.tree.limits, 0.0)
        paths = self.tree._paths
        joules = gpu_joules = 0.0
        ths_seconds = 0.0
        for members in self._cohorts():
            m = members[0]  # identical state: one integration stands for all of them
            high, joules_m, ths_m = _integrate(m, seconds)
            count = len(members)
            joules += count * joules_m
            ths_seconds += count * ths_m
            for other in members[1:]:
                other.draw, other.boot_left = m.draw, m.boot_left
            for node in paths[m.circuit]:
                peak[node] += count * high
        ai = 0.0
        for n in self.gpu_nodes:
            watts = n.draw()
            gpu_joules += watts * seconds
            for node in paths[n.circuit]:
                peak[node] += watts
            if n.running and n.job is not None:
                rate = n.job.value_usd_per_hour or 0.0
                ai += rate * gpu_speed_share(n.cap, n.kind.cap_max_w) * seconds / 3600
        out.miner_wh = joules / 3600
        out.gpu_wh = gpu_joules / 3600
        out.mining_usd = hashprice * ths_seconds / 3600 / 1000 / 24
        out.ai_usd = ai
        out.power_usd = power_price * out.energy_wh / 1e6
        out.violations = [str(v) for v in _over(peak, limits)]
        return out


    def _cohorts(self) -> Iterable[list[SimMiner]]:
        """Miners of one group in one state (draw, set point, boot), which the next interval
        treats alike: a 1,000-miner site is a few dozen of them. Ungrouped: one miner each."""
        if not self.grouped:
            return ([m] for m in self.miners)
        cohorts: dict[tuple[int, float, float, bool, float], list[SimMiner]] = {}
        for m in self.miners:
            cohorts.setdefault((m.group, m.draw, m.target, m.sleeping, m.boot_left), []).append(m)
        return cohorts.values()


def _integrate(m: SimMiner, seconds: float) -> tuple[float, float, float]:
    """Move one miner ``seconds`` on: (its highest draw, joules, TH/s-seconds hashed)."""
    high = m.draw
    left = seconds
    joules = ths_seconds = 0.0
    if m.boot_left > 0:  # booting: its boot draw, no hashrate, then the ramp to its set point
        booting = min(m.boot_left, seconds)
        joules += booting * m.draw
        m.boot_left -= booting
        left -= booting
    if m.boot_left <= 0:
        start = m.draw
        target = m.setpoint()
        need = abs(target - start) / RAMP_WATTS_PER_S
        if need <= left:
            end, reach = target, need
        else:  # still ramping when the interval ends
            step = RAMP_WATTS_PER_S * left
            end, reach = (start + step if target > start else start - step), left
        joules += reach * (start + end) / 2 + (left - reach) * end
        if not m.sleeping:
            ths_seconds += reach * m.curve.ths_at((start + end) / 2) + (left - reach) * m.curve.ths_at(end)
        m.draw = end
        high = max(high, end)
    return high, joules, ths_seconds


def _over(peak: Mapping[str, float], limits: Mapping[str, float]) -> list[str]:
    return [
        f"{c}: {peak[c] / 1000:.2f} kW over its {limit / 1000:.2f} kW limit"
        for c, limit in limits.items()
        if peak[c] > limit + 1.0  # a watt of rounding is not a violation
    ]


def _with(job: GpuJob, **changes: object) -> GpuJob:
    return replace(job, **changes)  # type: ignore[arg-type]
