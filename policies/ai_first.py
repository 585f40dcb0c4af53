"""AI first: paid GPU work is honoured at full caps, then miners absorb what is left.

Firm (contracted) jobs are counted first and never touched; flexible jobs follow in the order
of ``priorities`` (by tier), each at full caps or the highest caps that fit. ``ai_headroom_kw``
is then kept free for AI work that arrives before the next tick (miners shed in seconds, a job
that finds no power waits minutes), and the miners share the rest by merit order: the same
:class:`~wattshift.policies.merit_order.MeritOrderPolicy`, run on a snapshot whose budget and
circuit limits have the GPU nodes' power taken off, with ``miners`` as its options.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wattshift.model.jobs import FlexTier
from wattshift.model.snapshot import GpuNodeState, SiteSnapshot

from .base import Allocation, Policy, parse_options
from .fill import Fill, fixed
from .merit_order import MeritOrderPolicy
from .strike_price import gpu_full_caps


class AiFirstOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ai_headroom_kw: float = Field(default=0.0, ge=0, le=1_000_000)
    # Flexible tiers in the order they are honoured when there is not room for every job.
    priorities: tuple[FlexTier, ...] = (FlexTier.SUSPENDABLE, FlexTier.PREEMPTIBLE)
    miners: dict[str, Any] = {}  # options of the merit order that places the miners

    @field_validator("priorities")
    @classmethod
    def _each_once(cls, value: tuple[FlexTier, ...]) -> tuple[FlexTier, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a tier may appear only once")
        if FlexTier.FIRM in value:
            raise ValueError("firm jobs always come first; list only flexible tiers")
        return value


class AiFirstPolicy:
    name = "ai-first"

    def __init__(self, options: AiFirstOptions | None = None, miners: Policy | None = None) -> None:
        self.options = options or AiFirstOptions()
        self.miners = miners or MeritOrderPolicy.from_options(self.options.miners)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AiFirstPolicy:
        parsed = parse_options(AiFirstOptions, options, cls.name)
        try:
            miners = MeritOrderPolicy.from_options(parsed.miners)
        except ValueError as err:
            raise ValueError(f"ai-first option miners: {err}") from None
        return cls(parsed, miners)

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        fill = Fill(snapshot)
        rank = {tier: i for i, tier in enumerate(self.options.priorities)}
        rank[FlexTier.FIRM] = -1  # a firm job not yet running is started before anything else
        placeable = sorted(
            (n for n in snapshot.gpu_nodes if not fixed(n)),
            key=lambda n: (
                rank.get(n.job.tier, len(rank)) if n.job else len(rank) + 1, -_value_per_watt(n), n.device_id
            ),
        )
        gpu_targets = [gpu_full_caps(fill, n) for n in placeable]
        for target in gpu_targets:
            fill.targets[target.device_id] = target

        # What the GPU nodes hold (targets, or worst case where we cannot command them) comes
        # off every circuit on their path; the reserve for arrivals comes off the site.
        held = {t.device_id: t.watts for t in gpu_targets}
        gpu_draw = fill.tree.loads(
            (n.circuit, n.worst_case_watts if fixed(n) else (held.get(n.device_id) or n.idle_watts))
            for n in snapshot.gpu_nodes
        )
        limits = {c: max(0.0, limit - gpu_draw[c]) for c, limit in fill.tree.limits.items()}
        reserve = self.options.ai_headroom_kw * 1000.0
        limits["site"] = max(0.0, limits["site"] - reserve)
        for_miners = dataclasses.replace(snapshot, budget_watts=limits["site"], circuit_limits=limits, gpu_nodes=())
        mining = self.miners.decide(for_miners)

        firm = [fill.targets[n.device_id] for n in snapshot.gpu_nodes if fixed(n)]
        targets = firm + gpu_targets + list(mining.targets)
        ai_kw = sum(t.watts for t in firm + gpu_targets) / 1000
        summary = (
            f"ai-first: {ai_kw:.1f} kW to AI, {reserve / 1000:.1f} kW kept for AI arrivals, "
            f"{limits['site'] / 1000:.1f} kW left for miners; {mining.summary}"
        )
        return Allocation(tuple(targets), summary)


def _value_per_watt(n: GpuNodeState) -> float:
    rate = n.job.value_usd_per_hour if n.job else None
    return (rate or 0.0) / max(n.max_watts, 1.0)
