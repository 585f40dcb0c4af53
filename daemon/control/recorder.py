"""The core publishes; adapters subscribe. The loop tells one :class:`Recorder` what it
decided, sent and saw; the journal, the metrics (and later MQTT) each implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from wattshift.daemon.journal.entries import EntryKind, NewEntry
from wattshift.daemon.journal.store import AsyncJournal
from wattshift.model.snapshot import MinerState, SiteSnapshot
from wattshift.policies.base import Allocation

from .sequencer import Plan, Step

if TYPE_CHECKING:
    from .actuator import StepResult
    from .controller import TickReport


class Recorder(Protocol):
    async def decision(
        self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool
    ) -> None: ...

    async def commands(self, steps: Sequence[Step]) -> None: ...

    async def results(self, results: Sequence[StepResult]) -> None: ...

    async def tick(self, report: TickReport) -> None: ...

    async def event(self, summary: str, data: dict[str, object]) -> None: ...


class NullRecorder:
    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        pass

    async def commands(self, steps: Sequence[Step]) -> None:
        pass

    async def results(self, results: Sequence[StepResult]) -> None:
        pass

    async def tick(self, report: TickReport) -> None:
        pass

    async def event(self, summary: str, data: dict[str, object]) -> None:
        pass


class FanOut:
    """Send every record to several recorders, in order."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        for r in self.recorders:
            await r.decision(snapshot, allocation, plan, dry_run=dry_run)

    async def commands(self, steps: Sequence[Step]) -> None:
        for r in self.recorders:
            await r.commands(steps)

    async def results(self, results: Sequence[StepResult]) -> None:
        for r in self.recorders:
            await r.results(results)

    async def tick(self, report: TickReport) -> None:
        for r in self.recorders:
            await r.tick(report)

    async def event(self, summary: str, data: dict[str, object]) -> None:
        for r in self.recorders:
            await r.event(summary, data)


class JournalRecorder:
    """Decisions (with every device's reason), commands and results, durably, in one
    transaction per batch. Commands are journaled *before* they are sent, so a crash between
    sending and recording cannot hide a command from the audit."""

    def __init__(self, journal: AsyncJournal) -> None:
        self.journal = journal

    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        moves = {s.device_id: s for s in (*plan.sheds, *plan.grants, *plan.deferred)}
        data = {
            "dry_run": dry_run,
            "budget_watts": snapshot.budget_watts,
            "hashprice_usd_per_ph_day": snapshot.prices.hashprice_usd_per_ph_day,
            "power_usd_per_mwh": snapshot.prices.power_usd_per_mwh,
            "prices_stale": snapshot.prices.hashprice_stale or snapshot.prices.power_stale,
            "worst_case_watts": sum(d.worst_case_watts for d in snapshot.loads),
            "sheds": len(plan.sheds),
            "grants": len(plan.grants),
            "deferred": [s.device_id for s in plan.deferred],
            **({"fast_shed": True} if plan.fast_shed else {}),
            # Wakes held inside a miner's minimum down time (sequencer): asked for, not sent.
            **({"held": [s.device_id for s in plan.held]} if plan.held else {}),
        }
        entries = [NewEntry(EntryKind.DECISION, allocation.summary, None, data)]
        # Per device only where something changes or is wrong: a quiet tick stays small.
        for target in allocation:
            load = snapshot.load(target.device_id)
            if target.device_id in moves or not load.controllable:
                entry: dict[str, Any] = {"target_watts": target.watts}
                if isinstance(load, MinerState):
                    # How it is driven, and whether the firmware said so or a table guessed.
                    capability = load.capability
                    entry.update(control=capability.control.value, min_watts=capability.min_watts,
                                 max_watts=capability.max_watts, capability_source=capability.source.value)
                entries.append(NewEntry(EntryKind.DECISION, target.reason, target.device_id, entry))
        await self.journal.record_many(entries)

    async def commands(self, steps: Sequence[Step]) -> None:
        await self.journal.record_many(
            NewEntry(
                EntryKind.COMMAND,
                f"{'shed' if s.is_shed else 'grant'}: {s.describe()}",
                s.device_id,
                {"action": s.action.value, "watts": s.watts, "worst_before": s.worst_before,
                 "worst_after": s.worst_after},
            )
            for s in steps
        )

    async def results(self, results: Sequence[StepResult]) -> None:
        await self.journal.record_many(
            NewEntry(
                EntryKind.RESULT,
                f"{r.step.describe()}: {'ok' if r.ok else r.failure}" + ("" if r.ok else f" ({r.detail})"),
                r.step.device_id,
                {"ok": r.ok, "failure": r.failure.value if r.failure else None, "held_watts": r.held_watts,
                 "seconds": round(r.seconds, 3)},
            )
            for r in results
        )

    async def tick(self, report: TickReport) -> None:
        pass

    async def event(self, summary: str, data: dict[str, object]) -> None:
        await self.journal.record(EntryKind.EVENT, summary, data=data)
