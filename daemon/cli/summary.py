"""Human-readable text for the CLI: a site file in one screen, a plan as a table."""

from __future__ import annotations

from collections import Counter

from wattshift.daemon.config.price import FixedPrice, TracePrice
from wattshift.daemon.config.site import SiteConfig
from wattshift.model.fields import SITE_CIRCUIT
from wattshift.model.snapshot import MinerState, SiteSnapshot
from wattshift.policies.base import Allocation
from wattshift.policies.ladders import FIRM_VALUE_USD_PER_MWH


def site_summary(site: SiteConfig) -> str:
    parents = site.circuit_parents()
    limits = site.circuit_limits()
    miners: Counter[str] = Counter()
    firmware: Counter[str] = Counter()
    for group in site.miners:
        hosts = sum(1 for _ in group.hosts())
        miners[group.circuit] += hosts
        firmware[group.firmware] += hosts
    nodes = Counter(n.circuit for n in site.gpu_nodes)

    def tree(name: str, depth: int) -> list[str]:
        count = sum(miners[c] for c in _subtree(name, parents))
        gpu_nodes = sum(nodes[c] for c in _subtree(name, parents))
        label = "budget" if name == SITE_CIRCUIT else "limit"
        gpus = f", {gpu_nodes} GPU nodes" if gpu_nodes else ""
        lines = [f"{'  ' * depth}{name}: {label} {limits[name] / 1000:g} kW, {count} miners{gpus}"]
        for child in (c for c, p in parents.items() if p == name):
            lines += tree(child, depth + 1)
        return lines

    prices = site.prices
    lines = [
        f"site {site.name}: budget {site.budget_kw:g} kW, reserve {site.reserve_kw:g} kW, "
        f"tick {site.tick_seconds:g} s, policy {site.policy.name}",
        *tree(SITE_CIRCUIT, 1),
        "miners: " + ", ".join(f"{n} {fw}" for fw, n in sorted(firmware.items())) if firmware else "miners: none",
        f"hashprice: {_price(prices.hashprice_usd_per_ph_day, '$/PH/day')}; "
        f"power: {_price(prices.power_usd_per_mwh, '$/MWh')}; stale after {prices.stale_after_seconds:g} s",
        f"state: {site.state_dir}; metrics: http://{site.metrics_listen}/metrics; "
        f"credentials: {', '.join(sorted(site.credentials)) or 'none'}",
    ]
    return "\n".join(lines)


def _value(usd_per_mwh: float | None) -> str:
    if usd_per_mwh is None:
        return ""
    return "firm" if usd_per_mwh >= FIRM_VALUE_USD_PER_MWH else f"{usd_per_mwh:.0f}"


def _subtree(name: str, parents: dict[str, str | None]) -> list[str]:
    out = [name]
    for child, parent in parents.items():
        if parent == name:
            out += _subtree(child, parents)
    return out


def _price(source: object, unit: str) -> str:
    if isinstance(source, FixedPrice):
        return f"fixed {source.value:g} {unit}"
    if isinstance(source, TracePrice):
        return f"trace {source.file} ({unit})"
    return f"{getattr(source, 'source', '?')} ({unit})"


def plan_table(snapshot: SiteSnapshot, allocation: Allocation) -> str:
    """class, device, now, target, value, reason: one row per device, miners and GPU nodes
    together in merit order, so an operator sees what each MWh is worth where."""
    rows = [("CLASS", "DEVICE", "CIRCUIT", "NOW W", "TARGET W", "$/MWh", "CONTROL", "REASON")]
    for target in allocation:
        load = snapshot.load(target.device_id)
        now = load.measured_watts
        value = target.value_usd_per_mwh
        rows.append(
            (
                load.kind.value,
                load.device_id,
                load.circuit,
                "?" if now is None else f"{now:.0f}",
                f"{target.watts:.0f}" if load.controllable else "hold",
                _value(value),
                # How a miner is driven and where that was learned ("watts 1500-3600 W (firmware)").
                load.capability.describe() if isinstance(load, MinerState) else "",
                target.reason.split(": ", 1)[-1],
            )
        )
    columns = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:columns], widths, strict=True)) + "  " + r[-1] for r in rows]
    worst = sum(d.worst_case_watts for d in snapshot.loads)
    lines.append("")
    lines.append(allocation.summary)
    lines.append(
        f"budget in force {snapshot.budget_watts / 1000:.1f} kW (reserve taken off); "
        f"worst case now {worst / 1000:.1f} kW; planned {allocation.planned_watts() / 1000:.1f} kW"
    )
    return "\n".join(lines)
