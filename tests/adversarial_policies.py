"""Policies built to beat the hindsight optimum if it is not a bound: real plug-ins
(``package.module:factory`` in a policy file), loaded through the catalog like any other.

- ``WaitingFirm``: miners flat out or asleep by the price; a GPU node's job, firm or not, runs
  only while its work earns more than its power costs, so a pending firm job waits through dear
  power (which the sequencer allows);
- ``Random``: seeded; every device, every step, asleep/suspended or at a random target in its
  range. Pure: the draw depends on the seed, the time and the device, not on a call count.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from wattshift.model.snapshot import GpuNodeState, SiteSnapshot
from wattshift.policies.base import Allocation, Target


def _hold(load: Any) -> Target | None:
    """Loads a policy must leave alone: unknown ones, and firm work already running."""
    if not load.controllable or (isinstance(load, GpuNodeState) and load.firm and load.is_on):
        return Target(load.device_id, load.worst_case_watts, "left as it is")
    return None


class WaitingFirm:
    name = "waiting-firm"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WaitingFirm:
        return cls()

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        power = snapshot.prices.power_usd_per_mwh or 0.0
        hashprice = snapshot.prices.hashprice_usd_per_ph_day or 0.0
        targets = []
        for load in snapshot.loads:
            held = _hold(load)
            if held is not None:
                targets.append(held)
            elif isinstance(load, GpuNodeState):
                value = (load.job.value_usd_per_hour or 0.0) if load.job is not None else 0.0
                earns = value / (load.max_watts / 1e6) if load.job is not None else -1.0
                targets.append(Target(load.device_id, load.max_watts if earns > power else 0.0, "by value"))
            else:
                top = load.capability.max_watts
                earns = hashprice * load.curve.ths_at(top) / 1000 / 24 / (top / 1e6)
                targets.append(Target(load.device_id, top if earns > power else 0.0, "by value"))
        return Allocation(tuple(targets), "waits while power is dear")


class Random:
    def __init__(self, seed: int, on_share: float) -> None:
        self.seed = seed
        self.on_share = on_share
        self.name = f"random-{seed}"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Random:
        return cls(int(options.get("seed", 0)), float(options.get("on_share", 0.6)))

    def decide(self, snapshot: SiteSnapshot) -> Allocation:
        targets = []
        for load in snapshot.loads:
            held = _hold(load)
            if held is not None:
                targets.append(held)
                continue
            draw = random.Random(f"{self.seed}/{snapshot.at.isoformat()}/{load.device_id}")
            if isinstance(load, GpuNodeState):
                low, high = load.watts_at_cap(load.cap_min_watts), load.max_watts
            else:
                low, high = load.capability.min_watts, load.capability.max_watts
            watts = draw.uniform(low, high) if draw.random() < self.on_share else 0.0
            targets.append(Target(load.device_id, watts, "at random"))
        draw = random.Random(f"{self.seed}/{snapshot.at.isoformat()}/order")
        draw.shuffle(targets)
        return Allocation(tuple(targets), "random")
