"""Shared bookkeeping for the simple built-ins: what fits where, device by device.

:class:`Fill` starts from what the site must count whatever the policy says (every device it
cannot command at its worst case, every other at its idle draw) and hands out power one device
at a time, each only if it fits every circuit on its path. Pure arithmetic on the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattshift.model.limits import LimitTree
from wattshift.model.miner import PowerControl
from wattshift.model.snapshot import GpuNodeState, Load, MinerState, SiteSnapshot

from .base import Target


def miner_settings(m: MinerState) -> tuple[float, float, tuple[float, ...] | None]:
    """(lowest, highest, discrete settings or None when any watts in between will do)."""
    cap = m.capability
    top = min(cap.max_watts, m.max_watts)
    if cap.control is PowerControl.ON_OFF:
        return top, top, (top,)
    if cap.control is PowerControl.PROFILES and cap.profiles_watts:
        steps = tuple(sorted(p for p in cap.profiles_watts if cap.min_watts <= p <= top))
        if steps:
            return steps[0], steps[-1], steps
    return min(cap.min_watts, top), top, None


def gpu_settings(n: GpuNodeState) -> tuple[float, float, None]:
    """A node runs between every card at its lowest cap and every card at its highest."""
    return n.watts_at_cap(n.cap_min_watts), n.max_watts, None


@dataclass
class Fill:
    snapshot: SiteSnapshot

    def __post_init__(self) -> None:
        s = self.snapshot
        self.tree = LimitTree(s.effective_limits(), s.circuit_parents)
        self.targets: dict[str, Target] = {}
        draws = []
        for load in s.loads:
            if not fixed(load):
                draws.append((load.circuit, load.idle_watts))
            else:
                draws.append((load.circuit, load.worst_case_watts))
                self.targets[load.device_id] = Target(load.device_id, load.worst_case_watts, _uncontrolled(load))
        self.loads = self.tree.loads(draws)

    def headroom(self, load: Load) -> float:
        return self.tree.headroom(load.circuit, self.loads)

    def grant(self, load: Load, lowest: float, highest: float, steps: tuple[float, ...] | None) -> float:
        """The highest setting in [lowest, highest] that fits, taken; 0 if none fits."""
        room = self.headroom(load) + load.idle_watts
        if steps is not None:
            fitting = [w for w in steps if lowest <= w <= min(highest, room) + 1e-9]
            watts = max(fitting, default=0.0)
        else:
            watts = min(highest, room)
            watts = watts if watts >= lowest - 1e-9 else 0.0
        if watts > 0:
            self.tree.add(load.circuit, watts - load.idle_watts, self.loads)
        return watts

    def tightest(self, load: Load) -> str:
        node = min(self.tree.path(load.circuit), key=lambda c: self.tree.limits[c] - self.loads[c])
        return f"no room on {node} ({self.loads[node] / 1000:.1f} of {self.tree.limits[node] / 1000:.1f} kW)"


def fixed(load: Load) -> bool:
    """Loads a policy must leave as they are: unknown ones, and firm load already running."""
    if not load.controllable:
        return True
    return isinstance(load, GpuNodeState) and load.firm and load.is_on


def free(snapshot: SiteSnapshot) -> list[Load]:
    """The loads a policy may place."""
    return [load for load in snapshot.loads if not fixed(load)]


def dwelling(load: Load, snapshot: SiteSnapshot, min_dwell_seconds: float) -> bool:
    return load.state_since is not None and snapshot.clock - load.state_since < min_dwell_seconds


def _uncontrolled(load: Load) -> str:
    if load.controllable:  # firm and running
        job = load.job.name if isinstance(load, GpuNodeState) and load.job else "job"
        return f"{load.label} -> {load.worst_case_watts:.0f} W: firm ({job} on contract): never curtailed"
    why = load.failure.value if load.failure else "no answer"
    return f"{load.label}: {why}: counted at {load.worst_case_watts:.0f} W"
