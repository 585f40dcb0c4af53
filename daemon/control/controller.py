"""The control loop: observe, decide, sequence, act, confirm, record. One tick at a time.

Each tick is stateless apart from a little memory per miner (when it last changed state, whether
its last command failed): read every miner, build a snapshot, let the policy decide, send the
sheds and the grants that fit, wait for telemetry to confirm the sheds, then plan again from a
fresh snapshot and send what now fits. ``run_once`` is the whole tick, so tests step the loop
deterministically; ``run`` repeats it on a drift-free schedule and wakes early on events.

When a limit drops (a budget event, the schedule's next step down), ``shed_now`` sheds at once
from the last snapshot, without waiting for a read of the fleet, and the next tick follows: see
``fast_shed`` for why that is safe and when it is not taken, and ``shedder`` for its wiring
beside the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from wattshift.daemon.config.gpu import GpuNodeConfig
from wattshift.daemon.config.site import SiteConfig
from wattshift.drivers.base import DeviceError, MinerDriver
from wattshift.drivers.mqtt_meter import SiteMeter
from wattshift.drivers.prices import PriceError, PriceFeed, published_price
from wattshift.model.budget import BudgetEvent, BudgetSchedule
from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.miner import Failure, MinerCapability, MinerReading
from wattshift.model.snapshot import GpuNodeState, Prices, SiteSnapshot
from wattshift.policies.base import Allocation, Policy

from .actuator import StepResult, execute
from .deciding import decide
from .gpu_fleet import UNKNOWN_CARD, GpuFleet, GpuNodeDriver, NodeReading
from .memory import DeviceMemory, Switched, boot_allowance
from .meter_checks import (
    MeterRoom,
    OverheadEstimate,
    hold_increases,
    increases_allowed,
    shed_confirmed,
)
from .observe import (
    MinerSlot,
    attach_forecast,
    build_snapshot,
    gpu_node_state,
    miner_slots,
    miner_state,
    quote_prices,
)
from .recorder import NullRecorder, Recorder
from .report import TickReport as TickReport  # where the daemon's other rooms import it from
from .sequencer import Action, Plan, Step, plan_transition
from .shedder import FastShedder
from .ticks import TickSchedule

log = logging.getLogger(__name__)

CONFIRM_POLL_SECONDS = 1.0
RELEASED_TOLERANCE_WATTS = 50.0
# A miner that did not carry out a command is not trusted to obey the next one either: it is
# counted at its worst case and sent nothing until this long has passed, then tried again.
DISTRUST_SECONDS = 60.0
# How long a plan waits for the last miners to answer once the others have. A hung miner costs
# its whole read deadline; every other miner's shed must not wait for it: it is counted at its
# worst case for this plan, and its read goes on and lands for the next one. Answers that keep
# coming (a large fleet read through its concurrency bound) keep the window open.
ANSWER_GAP_SECONDS = 1.0
# Wake failures that say the miner is not booting (a silent or hanging one may be).
WAKE_NOT_TAKEN = frozenset({Failure.REFUSED, Failure.IGNORED, Failure.UNSUPPORTED})


class Fleet(Protocol):
    """What the loop needs from the miner drivers (see wattshift.drivers.pyasic_miner)."""

    async def read_all(self, *, answer_gap_s: float | None = None) -> Mapping[str, MinerReading | DeviceError]: ...

    async def read(self, device_ids: list[str]) -> Mapping[str, MinerReading | DeviceError]: ...

    def driver(self, device_id: str) -> MinerDriver | None: ...

    def capability(self, device_id: str) -> MinerCapability | None: ...

    def on_capability_lost(self, callback: Callable[[str], None]) -> None: ...


class Controller:
    def __init__(
        self,
        site: SiteConfig,
        fleet: Fleet,
        policy: Policy,
        *,
        hashprice: PriceFeed,
        power_price: PriceFeed,
        budget: BudgetSchedule | None = None,
        recorder: Recorder | None = None,
        dry_run: bool = False,
        gpus: GpuFleet | None = None,
        gpu_rates: Mapping[str, PriceFeed] | None = None,
        meter: SiteMeter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.site = site
        self.fleet = fleet
        self.policy = policy
        # Besides the policy, what reads the snapshot's forecast (a shadow candidate that plans).
        self.forecast_readers: list[object] = []
        self.budget = budget or BudgetSchedule(site.budget_watts)
        self.recorder = recorder or NullRecorder()
        self.dry_run = dry_run  # the process's (--dry-run): fixed for its life, no command changes it
        # Manual mode (pause/resume): observe, decide, journal, send nothing. The listener is told
        # before it changes (wattshift.daemon.runtime.site_state persists it); one that raises stops the change.
        self.mode_listener: Callable[[bool], None] | None = None
        self._paused = False
        # Told of each batch of miners' on/off changes once they are carried out (site_state
        # persists them, so a restart keeps the minimum up and down times); see restore_switches.
        self.switch_listener: Callable[[Mapping[str, Switched]], None] | None = None
        self.gpus = gpus
        # The site's revenue meter, where there is one: it confirms sheds, measures what the
        # devices cannot see (cooling, losses), and a stale meter holds every increase.
        self.meter = meter
        self.overhead = OverheadEstimate()
        self._overhead_planned = 0.0  # the overhead taken off the budget in the last snapshot
        self._overhead_known = False  # ... and whether it had been measured by then
        self._feeds = {"hashprice": hashprice, "power": power_price}
        self._rate_feeds = dict(gpu_rates or {})
        self._quotes: dict[str, tuple[float, float]] = {}
        self._clock = clock
        self._wall = wall
        self._slots: dict[str, MinerSlot] = miner_slots(site)
        self._memory: dict[str, DeviceMemory] = {d: DeviceMemory() for d in self._slots}
        self._memory.update({n.name: DeviceMemory() for n in site.gpu_nodes})
        self._wake = asyncio.Event()
        # Set when a device's worst case rose after the snapshot was taken, with no command sent:
        # the plan no longer holds, so the tick stops waiting for confirmations and plans again.
        self._worst_rose = False
        fleet.on_capability_lost(
            lambda device_id: self._worst_case_rose(device_id, "driver dropped", Failure.UNIDENTIFIED))
        # The fast shed (shedder.py): the last snapshot, what was commanded since its reads
        # began, and the lock that keeps a tick's commands and a fast shed's apart.
        self._shed = FastShedder(self, memory=self._memory, send=self._send, clock=clock, wall=wall)
        self.last_report: TickReport | None = None
        self.commands_sent = 0
        self.command_failures = 0

    @property
    def last_fast_shed(self) -> TickReport | None:
        return self._shed.last

    @property
    def miner_ids(self) -> list[str]:
        return list(self._slots)

    @property
    def paused(self) -> bool:
        """Manual mode: an operator's pause. Sends nothing, like ``--dry-run``, which no command ends."""
        return self._paused

    @paused.setter
    def paused(self, paused: bool) -> None:
        if self.mode_listener is not None:
            self.mode_listener(paused)
        self._paused = paused

    def assume_waking(self, device_ids: frozenset[str]) -> None:
        """Devices told to wake by a command whose outcome is unknown (it was open when the last
        run died): counted as waking, on and at their limit, until seen running, as after a
        wake that timed out."""
        now = self._clock()
        for device_id in device_ids & self._memory.keys():
            self._memory[device_id].start_waking(now)  # the boot allowance runs from the restart

    def restore_switches(self, saved: Mapping[str, Switched], now: datetime) -> tuple[list[str], list[str]]:
        """Put back the last run's on/off changes, on this run's loop clock, before the first
        decision: a miner stopped a minute before a crash stays down through its minimum down
        time. Only miners of the site file, and only changes younger than the longest minimum
        up or down time among them (an older one holds nothing back). Returns the miners put
        back and those left out."""
        horizon = max((max(s.switching.min_up_seconds, s.switching.min_down_seconds) for s in self._slots.values()),
                      default=0.0)
        clock = self._clock()
        restored, dropped = [], []
        for device_id, switched in saved.items():
            age = (now - switched.at).total_seconds()
            slot = self._slots.get(device_id)
            if slot is None or horizon <= 0 or age >= horizon:
                dropped.append(device_id)
                continue
            self._memory[device_id].restore(switched.on, age, clock, boot_allowance(slot.switching.boot_seconds))
            restored.append(device_id)
        return restored, dropped

    # -- the loop -------------------------------------------------------------------------------

    async def add_budget_event(self, event: BudgetEvent) -> None:
        """A curtailment (or its end) changes the budget: record it, shed at once if it lowered
        the budget (``run`` serves that from the last snapshot), and plan again at once."""
        self.budget.add(event)  # raises ValueError on a bad event, before anything changes
        await self.recorder.event(
            f"budget event {event.name}: {event.limit_watts / 1000:.1f} kW from {event.start.isoformat()}"
            + (f" to {event.end.isoformat()}" if event.end else ""),
            {"limit_watts": event.limit_watts},
        )
        self._shed.limits_fell()
        self.request_replan(f"budget event {event.name}")

    def request_replan(self, reason: str) -> None:
        """Wake the loop before its next tick (budget changed, device lost, command received)."""
        log.info("re-plan requested: %s", reason)
        self._wake.set()

    def _worst_case_rose(self, device_id: str, why: str, failure: Failure = Failure.NO_ANSWER) -> None:
        """Between a snapshot and the next, a device's worst case rose by itself (its driver was
        dropped, a read was lost): plan again now rather than at the next tick."""
        self._worst_rose = True
        self._shed.since.worst_rose(device_id, failure)
        self.request_replan(f"{device_id}: {why}, its worst case rose")

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``tick_seconds`` from a fixed schedule (no drift), and in between on request.

        An early tick never delays the regular one, and requests that arrive while a tick runs
        or within the schedule's gap are served together by one early tick (see ``ticks``)."""
        schedule = TickSchedule.starting(self._clock(), self.site.tick_seconds)
        shedder = self._shed.start(stop)  # beside the ticks: a fast shed whenever a limit falls
        try:
            while not stop.is_set():
                schedule.start(self._clock())
                self._wake.clear()  # a request from here on is served by the next tick: none is lost
                try:
                    await self.run_once()
                except Exception:  # one bad tick must not stop the control of the site
                    log.exception("tick failed; the next tick starts from fresh readings")
                await self._until_next_tick(schedule, stop)
        finally:
            if stop.is_set():
                await shedder  # a fast shed under way lands and is journaled before the loop ends
            else:
                shedder.cancel()
                await asyncio.gather(shedder, return_exceptions=True)

    async def _until_next_tick(self, schedule: TickSchedule, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            timeout = schedule.wait(self._clock(), requested=False)
            await asyncio.wait([stopping, woken], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if woken.done() and not stopping.done():
                await asyncio.wait([stopping], timeout=schedule.wait(self._clock(), requested=True))
        finally:
            stopping.cancel()
            woken.cancel()

    async def run_once(self) -> TickReport:
        started = self._clock()
        await self._shed.landed()  # a fast shed under way lands before this tick reads, so its reads see it
        snapshot = await self.observe()
        async with self._shed.acting():  # from the first plan to the end: no fast shed meanwhile
            # What is still recorded after a read was sent during it: a fast shed's steps.
            report = await self._act(snapshot, started, raced=bool(self._shed.since.steps))
        await self.recorder.tick(report)
        return report

    async def _act(self, snapshot: SiteSnapshot, started: float, *, raced: bool) -> TickReport:
        """The tick after its first read. ``raced``: a fast shed went out during that read, so
        the snapshot may not show it (nor the dwell times it started): sheds only, and the next
        tick, which reads after it, may grant."""
        allocation = await decide(self.policy, snapshot)
        notes: list[str] = []
        plan = self._metered(plan_transition(snapshot, allocation), notes)
        if raced and (plan.grants or plan.deferred):
            notes.append("a fast shed went out during this tick's read: increases wait for the next tick")
            plan = hold_increases(plan)
            self.request_replan("a fast shed went out during the tick's read")
        plans = [plan]
        results: list[StepResult] = []
        holding = self.dry_run or self.paused
        await self.recorder.decision(snapshot, allocation, plan, dry_run=holding)
        if not holding and not plan.empty:
            meter_before = self.meter.latest() if self.meter is not None else None
            results += await self._send(plan.now)
            if plan.deferred:
                # Shed before grant: believe the released power only once telemetry shows it,
                # and the meter (the breaker's view) leaves room for what waits on it.
                room = MeterRoom(
                    meter_before,
                    grants_watts=sum(max(0.0, s.worst_after - s.worst_before) for s in plan.deferred),
                    limit_watts=snapshot.effective_limits()[SITE_CIRCUIT] + self._overhead_planned,
                )
                confirmed = await self._confirm_released(plan.sheds, room)
                if self._shed.pending:
                    # This plan counted on the old limits: it grants nothing more, and the fast
                    # shed goes out as soon as this tick ends; the tick after it may grant.
                    notes.append("a limit dropped while the sheds were confirmed: the rest waits for the fast shed")
                    return self._report(snapshot, allocation, plans, results, started, holding, notes)
                if self._worst_rose:
                    notes.append("a worst case rose while the sheds were confirmed: planned again at once")
                elif not confirmed:
                    notes.append("sheds not confirmed in time: their miners stay at worst case")
                failed = {r.step.device_id for r in results if not r.ok}
                snapshot = await self.observe(suspect=failed)
                again = self._metered(plan_transition(snapshot, allocation), notes)
                plans.append(again)
                await self.recorder.decision(snapshot, allocation, again, dry_run=False)
                results += await self._send(again.now)
        return self._report(snapshot, allocation, plans, results, started, holding, notes)

    def _report(self, snapshot: SiteSnapshot, allocation: Allocation, plans: list[Plan], results: list[StepResult],
                started: float, holding: bool, notes: list[str]) -> TickReport:
        report = TickReport(
            snapshot, allocation, tuple(plans), tuple(results), self._clock() - started, holding, tuple(notes)
        )
        self.last_report = report
        return report

    # -- the fast shed (shedder.py) ------------------------------------------------------------

    async def shed_now(self, reason: str) -> TickReport | None:
        """If a limit dropped below what the last snapshot was planned with, shed at once from
        that snapshot (with what was commanded since), without reading the fleet, and ask for
        the tick that reads, confirms and may grant. None where it did not (see fast_shed for
        when and why); while a tick or another fast shed acts, it is done as that one ends."""
        return await self._shed.shed_now(reason)

    # -- observe --------------------------------------------------------------------------------

    async def observe(self, suspect: set[str] | None = None) -> SiteSnapshot:
        """Read every miner and every price feed; build the snapshot."""
        suspect = suspect or set()
        mark = self._shed.since.mark()  # what was commanded before these reads, they see
        gap = min(ANSWER_GAP_SECONDS, self.site.drivers.call_timeout_seconds)
        readings, nodes, prices = await asyncio.gather(
            self.fleet.read_all(answer_gap_s=gap), self._read_nodes(), self._read_prices()
        )
        self._worst_rose = False  # this snapshot counts everything known so far
        now_clock = self._clock()
        miners = []
        for device_id, slot in self._slots.items():
            result = readings.get(device_id)
            memory = self._memory[device_id]
            state = miner_state(
                slot,
                result,
                self.fleet.capability(device_id),
                state_since=memory.state_since,
                ignored=device_id in suspect or now_clock < memory.distrusted_until,
                waking=memory.still_waking(device_id, now_clock, boot_allowance(slot.switching.boot_seconds)),
            )
            if memory.waking and state.reading is not None and state.reads_on:
                memory.waking = False
            memory.remember(state, now_clock)
            miners.append(state)
        gpu_nodes = [
            self._node_state(node, nodes.get(node.name), prices, suspect, now_clock) for node in self.site.gpu_nodes
        ]
        now = self._wall()
        self.budget.expire(now)
        # What the devices cannot see (cooling, transformer losses) comes off the budget.
        overhead = self.overhead.watts if self.meter is not None else 0.0
        self._overhead_planned = overhead
        self._overhead_known = self.overhead.known  # whether this snapshot's budget allowed for it
        snapshot = build_snapshot(
            self.site,
            miners,
            prices,
            budget_watts=max(0.0, self.budget.in_force(now) - overhead),
            at=now,
            clock=now_clock,
            gpu_nodes=gpu_nodes,
        )
        snapshot = attach_forecast(snapshot, [self.policy, *self.forecast_readers], self.budget, now,
                                   less_watts=overhead + self.site.reserve_watts,
                                   price_at=published_price(self._feeds["power"]))
        if self.meter is not None:
            loads = snapshot.loads
            self.overhead.update(
                self.meter.latest(),
                sum(d.measured_watts or 0.0 for d in loads),
                all_devices_read=all(d.measured_watts is not None for d in loads),
            )
        self._shed.snapshot_taken(snapshot, overhead, mark)
        return snapshot

    async def _read_nodes(self) -> Mapping[str, NodeReading]:
        return await self.gpus.read_all() if self.gpus is not None else {}

    def _node_state(
        self, node: GpuNodeConfig, reading: NodeReading | None, prices: Prices, suspect: set[str], now_clock: float
    ) -> GpuNodeState:
        memory = self._memory[node.name]
        state = gpu_node_state(
            node,
            reading,
            self.gpus.card_limits(node.name) if self.gpus is not None else UNKNOWN_CARD,
            self.site.jobs,
            prices,
            state_since=memory.state_since,
            waking=memory.waking,
            distrusted=node.name in suspect or now_clock < memory.distrusted_until,
        )
        if memory.waking and state.reads_on:
            memory.waking = False
        memory.remember(state, now_clock)
        return state

    async def _read_prices(self) -> Prices:
        feeds = {**self._feeds, **{f"gpu:{model}": feed for model, feed in self._rate_feeds.items()}}

        async def read(name: str, feed: PriceFeed) -> None:
            try:
                async with asyncio.timeout(self.site.drivers.call_timeout_seconds):
                    quote = await feed.latest()
            except (PriceError, TimeoutError) as err:
                log.warning("price feed %s: %s; holding the last good value", feed.name, err)
                return
            self._quotes[name] = (quote.value, quote.at)

        # All at once: a hung feed costs one deadline, not one per feed, before the sheds go out.
        await asyncio.gather(*(read(name, feed) for name, feed in feeds.items()))
        return quote_prices(
            self._quotes.get("hashprice"),
            self._quotes.get("power"),
            clock=self._clock(),
            stale_after=self.site.prices.stale_after_seconds,
            gpu_rates={
                model: self._quotes[f"gpu:{model}"] for model in self._rate_feeds if f"gpu:{model}" in self._quotes
            },
        )

    # -- act ------------------------------------------------------------------------------------

    async def _send(self, steps: tuple[Step, ...]) -> list[StepResult]:
        if not steps:
            return []
        await self.recorder.commands(steps)
        self._shed.since.sent(steps)  # before sending: a command whose answer is lost may have landed
        for step in steps:
            # Set before sending: a wake that times out may still have reached the miner.
            if step.action is Action.WAKE:
                self._memory[step.device_id].start_waking(self._clock())
            elif step.action is Action.SLEEP:
                self._memory[step.device_id].waking = False
        results = await execute(
            steps,
            self._driver,
            concurrency=self.site.drivers.concurrency,
            timeout_seconds=self.site.drivers.call_timeout_seconds * 3,
        )
        self.commands_sent += len(results)
        self.command_failures += sum(1 for r in results if not r.ok)
        now, wall = self._clock(), self._wall()
        switched: dict[str, Switched] = {}
        for result in results:
            if not result.ok:
                self._memory[result.step.device_id].distrusted_until = now + DISTRUST_SECONDS
                if result.step.action is Action.WAKE and result.failure in WAKE_NOT_TAKEN:
                    # It answered, and did not wake: not booting, so not counted as on. Once
                    # trusted again it reads asleep and the policy may wake it again.
                    self._memory[result.step.device_id].waking = False
            if result.ok and result.step.action in (Action.SLEEP, Action.WAKE):
                memory = self._memory[result.step.device_id]
                memory.state_since = now
                memory.was_on = result.step.action is Action.WAKE
                if result.step.device_id in self._slots:
                    switched[result.step.device_id] = Switched(memory.was_on, wall)
        self._save_switches(switched)
        await self.recorder.results(results)
        return results

    def _save_switches(self, switched: Mapping[str, Switched]) -> None:
        """One write for the whole batch, and only when a miner changed between on and off."""
        if not switched or self.switch_listener is None:
            return
        try:
            self.switch_listener(switched)
        except Exception:  # the commands went out: the tick goes on; a restart then knows less
            log.exception("on/off changes of %d miner(s) could not be saved to the state file", len(switched))

    def _driver(self, device_id: str) -> MinerDriver | GpuNodeDriver | None:
        if device_id in self._slots:
            return self.fleet.driver(device_id)
        return self.gpus.driver(device_id) if self.gpus is not None else None

    def _metered(self, plan: Plan, notes: list[str]) -> Plan:
        """A site with a meter increases its draw only while the meter is fresh (invariant 4), and
        once the load no device reports has been measured: before, it could be anything."""
        if self.meter is None or not (plan.grants or plan.deferred):
            return plan
        if not increases_allowed(self.meter.latest()):
            notes.append("site meter stale: increases held")
            return hold_increases(plan)
        if not self._overhead_known:
            notes.append("load no device reports not measured yet: increases held")
            return hold_increases(plan)
        return plan

    async def _confirm_released(self, sheds: tuple[Step, ...], room: MeterRoom | None = None) -> bool:
        """Poll the shed devices until each draws no more than its new setting, and the site
        meter (where there is one) leaves room for the grants, or time runs out."""
        pending = {s.device_id: s for s in sheds}
        deadline = self._clock() + self.site.drivers.confirm_timeout_seconds

        def metered() -> bool:
            if self.meter is None or room is None:
                return True
            return shed_confirmed(room, self.meter.latest())

        while (pending or not metered()) and self._clock() < deadline and not (self._worst_rose or self._shed.pending):
            await asyncio.sleep(CONFIRM_POLL_SECONDS)
            for device_id, watts in (await self._read_watts(list(pending))).items():
                if watts is not None and watts <= pending[device_id].worst_after + RELEASED_TOLERANCE_WATTS:
                    del pending[device_id]
        return not pending and metered()

    async def _read_watts(self, device_ids: list[str]) -> dict[str, float | None]:
        miners = [d for d in device_ids if d in self._slots]
        nodes = [d for d in device_ids if d not in self._slots]
        watts: dict[str, float | None] = {}
        if miners:
            for device_id, reading in (await self.fleet.read(miners)).items():
                watts[device_id] = reading.watts if isinstance(reading, MinerReading) else None
                if isinstance(reading, DeviceError):  # unknown now: counted at its most
                    self._worst_case_rose(device_id, f"read lost ({reading.failure})")
        if nodes and self.gpus is not None:
            configs = {n.name: n for n in self.site.gpu_nodes}
            for name, node_reading in (await self.gpus.read(nodes)).items():
                state = gpu_node_state(configs[name], node_reading, self.gpus.card_limits(name), self.site.jobs,
                                       Prices(None, None), state_since=None)
                watts[name] = state.measured_watts
                if state.failure is not None:
                    self._worst_case_rose(name, f"read lost ({state.failure})")
        return watts
