"""Shadow mode: a candidate policy decides beside the live one, and nothing is sent for it.

:class:`ShadowRecorder` is a Recorder: each time the loop decides, the candidate decides on the
same snapshot, and the recorder estimates what the difference is worth per hour at the
snapshot's prices (a miner earns hashprice times the hashrate its curve gives at its target; a
GPU node earns its job's rate times the share of full speed its cap allows, as in
:mod:`wattshift.policies.ladders`; both pay the power price for their target watts). It exports
the estimate and the number of devices the two disagree on, and journals what the candidate
would have done, for the devices that differ only (at most ``max_devices`` of them).

A candidate that raises is logged and skipped: it must never disturb the live loop.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from wattshift.daemon.config.policy_file import load_policy_file
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.journal.store import AsyncJournal
from wattshift.model.snapshot import Load, Prices, SiteSnapshot
from wattshift.policies.base import Allocation, Policy
from wattshift.policies.ladders import revenue_usd_per_hour

from .deciding import decide
from .recorder import NullRecorder
from .sequencer import Plan

log = logging.getLogger(__name__)

DEADBAND_WATTS = 50.0  # smaller differences are regulation noise, not a different decision
MAX_DEVICES = 20


def value_usd_per_hour(load: Load, watts: float, prices: Prices) -> float:
    """Revenue minus power cost of ``load`` held at ``watts``; off (0 W) is worth 0."""
    if watts <= 0:
        return 0.0
    cost = watts / 1e6 * (prices.power_usd_per_mwh or 0.0)
    return revenue_usd_per_hour(load, watts, prices.hashprice_usd_per_ph_day or 0.0) - cost


@dataclass(frozen=True, slots=True)
class Difference:
    device_id: str
    live_watts: float
    candidate_watts: float
    candidate_reason: str

    def as_json(self) -> dict[str, object]:
        return {"device": self.device_id, "live_watts": self.live_watts,
                "candidate_watts": self.candidate_watts, "reason": self.candidate_reason}


@dataclass(frozen=True)
class Comparison:
    live_usd_per_hour: float
    candidate_usd_per_hour: float
    differences: tuple[Difference, ...]

    @property
    def difference_usd_per_hour(self) -> float:
        """Candidate minus live: positive means the candidate would earn more."""
        return self.candidate_usd_per_hour - self.live_usd_per_hour


def compare(snapshot: SiteSnapshot, live: Allocation, candidate: Allocation,
            deadband_watts: float = DEADBAND_WATTS) -> Comparison:
    live_total = candidate_total = 0.0
    differences = []
    for load in snapshot.loads:
        mine, theirs = live.get(load.device_id), candidate.get(load.device_id)
        if mine is None or theirs is None:
            continue
        live_total += value_usd_per_hour(load, mine.watts, snapshot.prices)
        candidate_total += value_usd_per_hour(load, theirs.watts, snapshot.prices)
        if abs(mine.watts - theirs.watts) > deadband_watts:
            differences.append(Difference(load.device_id, mine.watts, theirs.watts, theirs.reason))
    # The biggest disagreements first: those are the ones a bounded journal entry keeps.
    differences.sort(key=lambda d: (-abs(d.candidate_watts - d.live_watts), d.device_id))
    return Comparison(live_total, candidate_total, tuple(differences))


class ShadowRecorder(NullRecorder):
    """Only ``decision`` matters to the shadow; every other record is ignored."""

    def __init__(
        self,
        candidate: Policy,
        *,
        registry: CollectorRegistry,
        journal: AsyncJournal | None = None,
        max_devices: int = MAX_DEVICES,
        deadband_watts: float = DEADBAND_WATTS,
    ) -> None:
        self.candidate = candidate
        self.journal = journal
        self.max_devices = max_devices
        self.deadband_watts = deadband_watts
        self.last: Comparison | None = None
        self.revenue_difference = Gauge(
            "wattshift_shadow_revenue_difference_usd_per_hour",
            "Estimated revenue of the shadow policy minus the live one, at current prices (USD/h)",
            registry=registry)
        self.devices_differing = Gauge(
            "wattshift_shadow_devices_differing", "Devices whose shadow target differs from the live one",
            registry=registry)

    @classmethod
    def from_file(cls, path: Path, *, registry: CollectorRegistry, journal: AsyncJournal | None = None,
                  modules: Collection[str] = ()) -> ShadowRecorder:
        """The candidate from a policy file (raises FileInvalid, like the live one)."""
        return cls(load_policy_file(path, modules), registry=registry, journal=journal)

    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        try:
            theirs = await decide(self.candidate, snapshot)  # a planning candidate: off the loop
        except Exception:
            log.exception("shadow policy %s failed on this snapshot; the live loop is unaffected",
                          getattr(self.candidate, "name", "?"))
            return
        comparison = compare(snapshot, allocation, theirs, self.deadband_watts)
        self.last = comparison
        self.revenue_difference.set(comparison.difference_usd_per_hour)
        self.devices_differing.set(len(comparison.differences))
        if self.journal is None or not comparison.differences:
            return
        kept = comparison.differences[: self.max_devices]
        name = self.candidate.name
        summary = (f"shadow {name}: {len(comparison.differences)} device(s) differ, "
                   f"{comparison.difference_usd_per_hour:+.2f} USD/h vs live; {theirs.summary}")
        await self.journal.record(EntryKind.DECISION, summary, data={
            "shadow": True,
            "policy": name,
            "live_usd_per_hour": round(comparison.live_usd_per_hour, 4),
            "shadow_usd_per_hour": round(comparison.candidate_usd_per_hour, 4),
            "difference_usd_per_hour": round(comparison.difference_usd_per_hour, 4),
            "devices_differing": len(comparison.differences),
            "devices": [d.as_json() for d in kept],
            "devices_left_out": len(comparison.differences) - len(kept),
        })
