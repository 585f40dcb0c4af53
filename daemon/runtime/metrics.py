"""Prometheus metrics: a recorder that turns each tick into gauges and counters.

Names follow the Prometheus naming guide: the ``wattshift_`` prefix, base units (watts, seconds,
hashes per second), ``_total`` on counters. Labels are bounded: circuits and devices come from
the site file, failure kinds and actions from enums. The registry is the recorder's own, never
the process-global one, so tests and the demo can run several side by side.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from wattshift.daemon.control.earnings import class_earnings
from wattshift.daemon.control.sequencer import Action, Plan, Step
from wattshift.model.jobs import FlexTier, JobState
from wattshift.model.limits import LimitTree
from wattshift.model.miner import Failure
from wattshift.model.snapshot import DeviceClass, GpuNodeState, MinerState, SiteSnapshot
from wattshift.policies.base import Allocation

if TYPE_CHECKING:
    from wattshift.daemon.control.actuator import StepResult
    from wattshift.daemon.control.controller import TickReport

MINER = DeviceClass.MINER.value
GPU = DeviceClass.GPU.value


class MetricsUnavailable(Exception):
    """The /metrics address cannot be listened on; the message names it and what to do."""


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process holds that port (a second wattshift? `ss -ltnp` shows which): "
                      "stop it, or set metrics_listen in the site file to a free HOST:PORT",
    errno.EADDRNOTAVAIL: "that address is not one of this host's: set metrics_listen to one that is",
    errno.EACCES: "ports below 1024 need privileges the daemon does not have: pick a port above 1024",
}


class MetricsRecorder:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(f"wattshift_{name}", doc, labels, registry=r)

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(f"wattshift_{name}", doc, labels, registry=r)

        self.budget = gauge("site_budget_watts", "Site budget in force, reserve taken off")
        self.headroom = gauge("site_headroom_watts", "Budget minus the worst-case draw of the site")
        self.circuit_limit = gauge("circuit_limit_watts", "Limit of each circuit", ["circuit"])
        self.circuit_measured = gauge("circuit_measured_watts", "Sum of measured device draw", ["circuit"])
        self.circuit_worst = gauge("circuit_worst_case_watts", "Worst-case draw (unknown = max)", ["circuit"])
        self.circuit_planned = gauge("circuit_planned_watts", "Draw the policy's allocation aims at", ["circuit"])
        self.class_measured = gauge("class_measured_watts", "Measured draw by device class", ["class"])
        self.class_planned = gauge("class_planned_watts", "Planned draw by device class", ["class"])
        self.class_revenue = gauge("class_revenue_usd_per_hour", "What each class earns now", ["class"])
        self.class_value = gauge(
            "class_value_usd_per_megawatt_hour", "Revenue per MWh each class draws now", ["class"]
        )
        self.gpu_rate = gauge("gpu_rate_usd_per_gpu_hour", "GPU rental rate in use, by GPU model", ["gpu_model"])
        self.gpu_jobs = gauge("gpu_jobs", "Jobs on the GPU nodes, by state and flex tier", ["state", "tier"])
        self.device_power = gauge("device_power_watts", "Measured draw of each device", ["device", "class"])
        self.device_limit = gauge("device_limit_watts", "Power limit each device reports", ["device", "class"])
        self.device_up = gauge("device_up", "1 if the device answered the last poll", ["device", "class"])
        self.device_on = gauge("device_on", "1 if the device is running (mining), 0 if asleep", ["device", "class"])
        self.hashrate = gauge("miner_hashrate_hashes_per_second", "Reported hashrate", ["device"])
        self.miner_control = gauge(
            "miner_control_info",
            "1 for how each miner is driven and where that was learned",
            ["device", "control", "source"],
        )
        self.miner_range = gauge("miner_range_watts", "Lowest and highest setting of each miner", ["device", "bound"])
        self._control_labels: dict[str, tuple[str, str]] = {}
        self.temperature = gauge("device_temperature_celsius", "Hottest reported temperature", ["device", "class"])
        self.hashprice = gauge("hashprice_usd_per_petahash_day", "Hashprice in use (USD per PH/s per day)")
        self.power_price = gauge("power_price_usd_per_megawatt_hour", "Power price in use (USD per MWh)")
        self.price_stale = gauge("price_stale", "1 if the feed's last good value is too old", ["feed"])
        self.decisions_taken = counter("decisions_total", "Policy decisions taken")
        self.commands_sent = counter("commands_total", "Commands sent to devices", ["action"])
        self.actuation_errors = counter("actuation_errors_total", "Commands that failed, by failure kind", ["failure"])
        self.read_errors = counter("read_errors_total", "Polls that failed, by failure kind", ["failure"])
        self.loop_seconds = Histogram(
            "wattshift_loop_duration_seconds", "Duration of one control-loop tick",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )
        self.last_tick = gauge("last_tick_timestamp_seconds", "Unix time the last tick finished")
        # Counters by enum label start at zero, so "no failures" is a series at 0, not nothing.
        for failure in Failure:
            self.actuation_errors.labels(failure.value)
            self.read_errors.labels(failure.value)
        for action in Action:
            self.commands_sent.labels(action.value)

    def serve(self, listen: str) -> None:
        """Serve /metrics on HOST:PORT from a background thread (prometheus_client's server);
        :class:`MetricsUnavailable` says why it cannot, and what to do."""
        host, _, port = listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        except OSError as err:
            hint = _LISTEN_HINTS.get(err.errno or 0, "check metrics_listen in the site file")
            raise MetricsUnavailable(f"cannot serve /metrics on {listen} (metrics_listen): "
                                     f"{err.strerror or err}; {hint}") from None

    # -- Recorder -------------------------------------------------------------------------------

    async def decision(self, snapshot: SiteSnapshot, allocation: Allocation, plan: Plan, *, dry_run: bool) -> None:
        self.decisions_taken.inc()
        tree = LimitTree(snapshot.effective_limits(), snapshot.circuit_parents)
        loads = snapshot.loads
        measured = tree.loads((d.circuit, d.measured_watts or 0.0) for d in loads)
        worst = tree.loads((d.circuit, d.worst_case_watts) for d in loads)
        planned = tree.loads((d.circuit, allocation[d.device_id].watts) for d in loads if allocation.get(d.device_id))
        for circuit, limit in tree.limits.items():
            self.circuit_limit.labels(circuit).set(limit)
            self.circuit_measured.labels(circuit).set(measured[circuit])
            self.circuit_worst.labels(circuit).set(worst[circuit])
            self.circuit_planned.labels(circuit).set(planned[circuit])
        self.budget.set(snapshot.budget_watts)
        self.headroom.set(snapshot.budget_watts - worst["site"])
        self._classes(snapshot, allocation)
        for m in snapshot.miners:
            up = m.reading is not None
            self.device_up.labels(m.device_id, MINER).set(1 if up else 0)
            if m.failure is not None and not up:
                self.read_errors.labels(m.failure.value).inc()
            self._capability(m)
            if m.reading is None:
                continue
            r = m.reading
            self.device_on.labels(m.device_id, MINER).set(1 if m.is_on else 0)
            if r.watts is not None:
                self.device_power.labels(m.device_id, MINER).set(r.watts)
            if r.limit_watts is not None:
                self.device_limit.labels(m.device_id, MINER).set(r.limit_watts)
            if r.hashrate_ths is not None:
                self.hashrate.labels(m.device_id).set(r.hashrate_ths * 1e12)
            if r.temperatures_c:
                self.temperature.labels(m.device_id, MINER).set(max(r.temperatures_c))
        for node in snapshot.gpu_nodes:
            self._gpu_node(node)
        prices = snapshot.prices
        if prices.hashprice_usd_per_ph_day is not None:
            self.hashprice.set(prices.hashprice_usd_per_ph_day)
        if prices.power_usd_per_mwh is not None:
            self.power_price.set(prices.power_usd_per_mwh)
        self.price_stale.labels("hashprice").set(1 if prices.hashprice_stale else 0)
        self.price_stale.labels("power").set(1 if prices.power_stale else 0)
        for model, rate in prices.gpu_rates_usd_per_gpu_hour.items():
            self.gpu_rate.labels(model).set(rate)
        if prices.gpu_rates_usd_per_gpu_hour:
            self.price_stale.labels("gpu_rate").set(1 if prices.gpu_rates_stale else 0)

    def _classes(self, snapshot: SiteSnapshot, allocation: Allocation) -> None:
        for kind, earned in class_earnings(snapshot).items():
            planned = sum(
                allocation[d.device_id].watts for d in snapshot.loads if d.kind is kind and allocation.get(d.device_id)
            )
            self.class_measured.labels(kind.value).set(earned.watts)
            self.class_planned.labels(kind.value).set(planned)
            self.class_revenue.labels(kind.value).set(earned.usd_per_hour)
            self.class_value.labels(kind.value).set(earned.usd_per_mwh or 0.0)
        jobs = collections.Counter(
            (n.job.state.value, n.job.tier.value) for n in snapshot.gpu_nodes if n.job is not None
        )
        for state in JobState:
            for tier in FlexTier:
                self.gpu_jobs.labels(state.value, tier.value).set(jobs.get((state.value, tier.value), 0))

    def _capability(self, m: MinerState) -> None:
        labels = (m.capability.control.value, m.capability.source.value)
        previous = self._control_labels.get(m.device_id)
        if previous is not None and previous != labels:
            self.miner_control.remove(m.device_id, *previous)  # one series per miner, not a trail
        self._control_labels[m.device_id] = labels
        self.miner_control.labels(m.device_id, *labels).set(1)
        self.miner_range.labels(m.device_id, "min").set(m.capability.min_watts)
        self.miner_range.labels(m.device_id, "max").set(m.capability.max_watts)

    def _gpu_node(self, node: GpuNodeState) -> None:
        up = node.failure is None
        self.device_up.labels(node.device_id, GPU).set(1 if up else 0)
        if node.failure is not None:
            self.read_errors.labels(node.failure.value).inc()
        self.device_on.labels(node.device_id, GPU).set(1 if node.is_on else 0)
        if node.measured_watts is not None:
            self.device_power.labels(node.device_id, GPU).set(node.measured_watts)
        if node.limit_watts is not None:
            self.device_limit.labels(node.device_id, GPU).set(node.limit_watts)
        temperatures = [r.temperature_c for r in node.readings if r.temperature_c is not None]
        if temperatures:
            self.temperature.labels(node.device_id, GPU).set(max(temperatures))

    async def commands(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.commands_sent.labels(step.action.value).inc()

    async def results(self, results: Sequence[StepResult]) -> None:
        for result in results:
            if result.failure is not None:
                self.actuation_errors.labels(result.failure.value).inc()

    async def event(self, summary: str, data: dict[str, object]) -> None:
        pass

    async def tick(self, report: TickReport) -> None:
        self.loop_seconds.observe(report.seconds)
        self.last_tick.set(report.snapshot.at.timestamp())
