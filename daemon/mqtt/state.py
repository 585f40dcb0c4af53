"""What wattshift publishes over MQTT, as JSON-ready dicts (pure: a tick report in, payloads out).

Power is in watts (``*_watts``), like the Prometheus metrics; times are ISO 8601 UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from wattshift.daemon.control.sequencer import Plan
from wattshift.drivers.mqtt_meter import MeterReading
from wattshift.model.budget import BudgetEvent
from wattshift.model.limits import LimitTree
from wattshift.model.snapshot import DeviceClass, MinerState, SiteSnapshot
from wattshift.policies.base import Allocation

from .topics import Topics

if TYPE_CHECKING:
    from wattshift.daemon.control.controller import TickReport


@dataclass(frozen=True)
class SiteContext:
    """What the state needs beyond the tick report: things the bridge learns elsewhere."""

    site_name: str
    mode: str  # "auto", "manual" (actuation paused) or "dry-run" (the process was started with --dry-run)
    policy: str
    events: tuple[BudgetEvent, ...] = ()
    budget_now_watts: float | None = None
    forced: Mapping[str, str] = field(default_factory=dict)  # device id -> on/off
    meter: MeterReading | None = None
    overhead_watts: float | None = None


def _r(watts: float | None) -> float | None:
    return None if watts is None else round(watts, 1)


def event_json(event: BudgetEvent) -> dict[str, Any]:
    return {"name": event.name, "limit_watts": _r(event.limit_watts), "start": event.start.isoformat(),
            "end": event.end.isoformat() if event.end else None, "priority": event.priority}


def site_state(report: TickReport, ctx: SiteContext) -> dict[str, Any]:
    snap = report.snapshot
    worst = sum(m.worst_case_watts for m in snap.loads)
    measured = sum(m.measured_watts or 0.0 for m in snap.loads)
    return {
        "site": ctx.site_name,
        "at": snap.at.isoformat(),
        "mode": ctx.mode,
        "policy": ctx.policy,
        "budget_watts": _r(snap.budget_watts),
        "budget_now_watts": _r(ctx.budget_now_watts),
        "worst_case_watts": _r(worst),
        "measured_watts": _r(measured),
        "headroom_watts": _r(snap.budget_watts - worst),
        "devices": len(snap.loads),
        "controllable": sum(1 for m in snap.loads if m.controllable),
        "hashprice_usd_per_ph_day": snap.prices.hashprice_usd_per_ph_day,
        "power_usd_per_mwh": snap.prices.power_usd_per_mwh,
        "prices_stale": snap.prices.hashprice_stale or snap.prices.power_stale,
        "events": [event_json(e) for e in ctx.events],
        "forced": dict(ctx.forced),
        "meter": None if ctx.meter is None else {
            "watts": _r(ctx.meter.watts), "age_seconds": round(ctx.meter.age_seconds, 1), "stale": ctx.meter.stale},
        "overhead_watts": _r(ctx.overhead_watts),
        "summary": report.allocation.summary,
    }


def circuit_states(snap: SiteSnapshot) -> dict[str, dict[str, Any]]:
    limits = snap.effective_limits()
    tree = LimitTree(limits, snap.circuit_parents)
    worst = tree.loads((m.circuit, m.worst_case_watts) for m in snap.loads)
    measured = tree.loads((m.circuit, m.measured_watts or 0.0) for m in snap.loads)
    out = {}
    for name, limit in limits.items():
        out[name] = {
            "circuit": name,
            "parent": snap.circuit_parents.get(name),
            "limit_watts": _r(limit),
            "worst_case_watts": _r(worst.get(name, 0.0)),
            "measured_watts": _r(measured.get(name, 0.0)),
            "headroom_watts": _r(tree.headroom(name, worst)),
        }
    return out


def class_states(snap: SiteSnapshot, allocation: Allocation) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in DeviceClass:
        loads = [d for d in snap.loads if d.kind is kind]
        if not loads:
            continue
        targets = [allocation.get(d.device_id) for d in loads]
        out[kind.value] = {
            "class": kind.value,
            "devices": len(loads),
            "on": sum(1 for d in loads if d.is_on),
            "controllable": sum(1 for d in loads if d.controllable),
            "worst_case_watts": _r(sum(d.worst_case_watts for d in loads)),
            "measured_watts": _r(sum(d.measured_watts or 0.0 for d in loads)),
            "target_watts": _r(sum(t.watts for t in targets if t is not None)),
        }
    return out


def device_states(snap: SiteSnapshot, allocation: Allocation, forced: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for m in snap.loads:
        target = allocation.get(m.device_id)
        out[m.device_id] = {
            "device": m.device_id,
            "class": m.kind.value,
            "circuit": m.circuit,
            "model": m.model if isinstance(m, MinerState) else m.gpu_model,
            "controllable": m.controllable,
            "failure": m.failure.value if m.failure else None,
            "on": m.is_on,
            "measured_watts": _r(m.measured_watts),
            "limit_watts": _r(m.limit_watts),
            "worst_case_watts": _r(m.worst_case_watts),
            "target_watts": _r(target.watts if target else None),
            "reason": target.reason if target else None,
            "forced": forced.get(m.device_id),
        }
    return out


def all_state(report: TickReport, ctx: SiteContext, topics: Topics) -> dict[str, dict[str, Any]]:
    """Every retained state topic and its payload for this tick."""
    snap, allocation = report.snapshot, report.allocation
    out = {topics.site: site_state(report, ctx)}
    out.update({topics.circuit(n): p for n, p in circuit_states(snap).items()})
    out.update({topics.device_class(n): p for n, p in class_states(snap, allocation).items()})
    out.update({topics.device(d): p for d, p in device_states(snap, allocation, ctx.forced).items()})
    return out


def decision_json(snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> dict[str, Any]:
    def steps(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [{"device": s.device_id, "action": s.action.value, "watts": _r(s.watts), "reason": s.reason}
                for s in items]

    return {
        "at": snapshot.at.isoformat(),
        "dry_run": dry_run,
        "summary": allocation.summary,
        "budget_watts": _r(snapshot.budget_watts),
        "worst_case_watts": _r(sum(m.worst_case_watts for m in snapshot.loads)),
        "sheds": steps(plan.sheds),
        "grants": steps(plan.grants),
        "deferred": steps(plan.deferred),
    }


def event_message(summary: str, data: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    return {"at": at.isoformat(), "summary": summary, "data": dict(data)}


def discovery_configs(topics: Topics, ha_prefix: str, site_name: str, node_id: str) -> dict[str, dict[str, Any]]:
    """Home Assistant MQTT discovery: one sensor per site-level figure, all reading the
    retained site state, all unavailable when the daemon's last will says offline."""
    device = {"identifiers": [node_id], "name": f"wattshift {site_name}", "manufacturer": "wattshift"}
    sensors = {
        "budget": ("Budget", "{{ value_json.budget_watts }}", "W", "power"),
        "draw": ("Draw (worst case)", "{{ value_json.worst_case_watts }}", "W", "power"),
        "measured": ("Draw (measured)", "{{ value_json.measured_watts }}", "W", "power"),
        "headroom": ("Headroom", "{{ value_json.headroom_watts }}", "W", "power"),
        "mode": ("Mode", "{{ value_json.mode }}", None, None),
    }
    out = {}
    for key, (name, template, unit, device_class) in sensors.items():
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node_id}_{key}",
            "object_id": f"{node_id}_{key}",
            "state_topic": topics.site,
            "value_template": template,
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
        }
        if unit:
            config.update(unit_of_measurement=unit, device_class=device_class, state_class="measurement")
        out[f"{ha_prefix}/sensor/{node_id}/{key}/config"] = config
    return out
