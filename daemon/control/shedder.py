"""The fast shed beside the loop: when it runs, what it waits for, and what it hands the loop.

The argument for why shedding from the last snapshot is safe, and the pure pieces it is built
from, are in :mod:`~wattshift.daemon.control.fast_shed`; this module is its wiring into the
controller. A :class:`FastShedder` keeps the last snapshot the loop took (its *basis*), what was
commanded since its reads began (:class:`~wattshift.daemon.control.fast_shed.CommandsSince`),
and one lock that a tick holds from its first plan to its end and a fast shed for its whole
length, so that neither acts while the other's commands are in flight. Beside the ticks it
watches the budget schedule (:meth:`FastShedder.start`) and sheds whenever a budget event
arrives and at each instant the schedule's budget may step down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from wattshift.daemon.config.site import SiteConfig
from wattshift.model.budget import BudgetSchedule
from wattshift.model.snapshot import SiteSnapshot
from wattshift.policies.base import Policy

from .actuator import StepResult
from .fast_shed import CommandsSince, limits_dropped, lowering, next_budget_change, refusal, shed_basis
from .memory import DeviceMemory
from .recorder import Recorder
from .report import TickReport
from .sequencer import Plan, Step, plan_transition

log = logging.getLogger(__name__)

# How often the fast shed looks at the budget schedule again: an event added behind the loop's
# back (restored at start, or by a caller of BudgetSchedule.add) is found within this long.
SCHEDULE_RECHECK_SECONDS = 1.0


class ShedHost(Protocol):
    """What the fast shed reads of the controller at the moment it sheds (a policy reload, an
    MQTT bridge or manual mode may have changed it since the controller was built)."""

    site: SiteConfig
    budget: BudgetSchedule
    policy: Policy
    recorder: Recorder
    dry_run: bool
    last_report: TickReport | None

    @property
    def paused(self) -> bool: ...

    def request_replan(self, reason: str) -> None: ...


class FastShedder:
    """``memory``: the controller's memory of each device (distrust, dwell times), read when it
    sheds; ``send``: the controller's own sender, so the commands are recorded and journaled as
    a tick's are."""

    def __init__(
        self,
        host: ShedHost,
        *,
        memory: Mapping[str, DeviceMemory],
        send: Callable[[tuple[Step, ...]], Awaitable[list[StepResult]]],
        clock: Callable[[], float],
        wall: Callable[[], datetime],
    ) -> None:
        self._host = host
        self._memory = memory
        self._send = send
        self._clock = clock
        self._wall = wall
        self.since = CommandsSince()
        self._basis: SiteSnapshot | None = None
        self._overhead = 0.0  # the overhead taken off the basis's budget
        self._acting = asyncio.Lock()
        self._limits_fell = asyncio.Event()  # wakes the watch (see start)
        self.pending = False  # a fast shed asked for while the lock was held
        self.last: TickReport | None = None

    # -- what the loop tells it -----------------------------------------------------------------

    def snapshot_taken(self, snapshot: SiteSnapshot, overhead: float, mark: int) -> None:
        """A new basis, read from ``mark`` on (``since.mark()``): what was commanded before
        its reads began, it shows, and is forgotten."""
        self._basis, self._overhead = snapshot, overhead
        self.since.forget(mark)

    def limits_fell(self) -> None:
        """A budget event arrived: the watch sheds at once if it lowered the budget."""
        self._limits_fell.set()

    async def landed(self) -> None:
        """Wait for a fast shed under way to land (a tick's reads then see it)."""
        async with self._acting:
            pass

    @contextlib.asynccontextmanager
    async def acting(self) -> AsyncIterator[None]:
        """A tick acts (from its first plan to its end): no fast shed meanwhile; one asked for
        meanwhile goes out as it ends."""
        async with self._acting:
            try:
                yield
            finally:
                self._serve_pending()

    # -- beside the ticks -----------------------------------------------------------------------

    def start(self, stop: asyncio.Event) -> asyncio.Task[None]:
        """The watch, as a task: a drop before it starts is served by the loop's first tick."""
        self._limits_fell.clear()
        return asyncio.create_task(self._watch(stop))

    async def _watch(self, stop: asyncio.Event) -> None:
        """A fast shed whenever a budget event arrives, and at each instant the schedule's
        budget may step down (an event coming within its lead time)."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                change = next_budget_change(self._host.budget, self._wall())
                timeout = SCHEDULE_RECHECK_SECONDS
                if change is not None:  # just past the instant
                    timeout = min(timeout, (change - self._wall()).total_seconds() + 0.01)
                fell = asyncio.ensure_future(self._limits_fell.wait())
                try:
                    # At least a moment: a wall clock that does not move (a test's) cannot spin it.
                    done, _ = await asyncio.wait([stopping, fell], timeout=max(0.05, timeout),
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    fell.cancel()
                if stop.is_set():
                    return
                if fell not in done and (change is None or self._wall() < change):
                    continue  # only the recheck: look at the schedule again
                self._limits_fell.clear()  # a drop from here on wakes the next round: none is lost
                try:
                    await self.shed_now("a budget event" if fell in done else "the schedule's next step")
                except Exception:  # the tick that follows reads and sheds: the site is not left
                    log.exception("fast shed failed; the next tick reads the fleet and sheds")
        finally:
            stopping.cancel()

    # -- the shed -------------------------------------------------------------------------------

    async def shed_now(self, reason: str) -> TickReport | None:
        """See ``Controller.shed_now``."""
        if self._acting.locked():
            self.pending = True
            log.info("fast shed (%s) waits for the tick under way", reason)
            return None
        async with self.acting():
            return await self._shed(reason)

    def _serve_pending(self) -> None:
        if self.pending:
            self.pending = False
            self._limits_fell.set()

    async def _shed(self, reason: str) -> TickReport | None:
        host = self._host
        started = self._clock()
        last = self._basis
        why_not = refusal(last, clock=started, tick_seconds=host.site.tick_seconds,
                          last_tick_seconds=host.last_report.seconds if host.last_report else 0.0,
                          holding=host.dry_run or host.paused)
        if why_not is not None or last is None:
            log.info("no fast shed (%s): %s; the next tick reads the fleet, then sheds", reason, why_not)
            return None
        now = self._wall()
        snapshot = shed_basis(
            last,
            self.since,
            distrusted={d for d, m in self._memory.items() if started < m.distrusted_until},
            state_since={s.device_id: self._memory[s.device_id].state_since for _, s in self.since.steps},
            budget_watts=self._budget_to_plan(now),
            circuit_limits=host.site.circuit_limits(),
            at=now,
            clock=started,
        )
        dropped = limits_dropped(last.effective_limits(), snapshot.effective_limits())
        if not dropped:
            return None
        allocation = host.policy.decide(snapshot)
        steps = lowering(plan_transition(snapshot, allocation).sheds, self.since.commanded())
        plan = Plan(steps, (), (), fast_shed=True)
        age = started - last.clock
        note = (f"fast shed ({reason}): {', '.join(dropped)} limit dropped; {len(steps)} shed(s) from the "
                f"snapshot of {age:.1f} s ago, before the fleet is read again")
        log.info("%s", note)
        await host.recorder.decision(snapshot, replace(allocation, summary=f"{note}. {allocation.summary}"),
                                     plan, dry_run=False)
        results = await self._send(steps)
        report = TickReport(snapshot, allocation, (plan,), tuple(results), self._clock() - started, False, (note,))
        self.last = report
        host.request_replan(f"after the fast shed ({reason})")
        return report

    def _budget_to_plan(self, now: datetime) -> float:
        """The site limit a snapshot plans against: the budget in force over the lead window,
        less what the devices cannot see, less the site's reserve (as build_snapshot)."""
        site_budget = self._host.budget.in_force(now)
        return max(0.0, max(0.0, site_budget - self._overhead) - self._host.site.reserve_watts)
