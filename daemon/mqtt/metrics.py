"""Prometheus metrics of the site meter and the MQTT link, read when Prometheus scrapes.

These are live states (is the broker connected, how old is the meter's last reading) rather
than per-tick results, so they are collectors that look at the meter and the bridge at scrape
time, not gauges the loop sets: an alert on a stale meter must fire even while the loop is
stuck. The scrape runs on prometheus_client's thread; it only reads plain attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wattshift.drivers.agent_link import REFUSALS, AgentLink
from wattshift.drivers.mqtt_meter import SiteMeter

if TYPE_CHECKING:
    from .bridge import MqttBridge


class MeterCollector(Collector):
    """``wattshift_meter_*``: the last good reading, its age, stale or not, the overhead it
    shows, and the messages read and refused."""

    def __init__(self, meter: SiteMeter, overhead_watts: Callable[[], float]) -> None:
        self.meter = meter
        self.overhead_watts = overhead_watts

    def collect(self) -> Iterator[Metric]:
        reading = self.meter.latest()
        if reading is not None:  # no reading yet: no value, rather than a made-up zero
            yield GaugeMetricFamily("wattshift_meter_power_watts", "Last good site-meter reading",
                                    value=reading.watts)
            yield GaugeMetricFamily("wattshift_meter_age_seconds", "Age of the last good site-meter reading",
                                    value=reading.age_seconds)
        yield GaugeMetricFamily("wattshift_meter_stale", "1 if the site meter has no fresh reading (increases held)",
                                value=1 if reading is None or reading.stale else 0)
        yield GaugeMetricFamily("wattshift_meter_overhead_watts",
                                "Meter minus the devices' readings, smoothed: cooling, losses, other loads",
                                value=self.overhead_watts())
        messages = CounterMetricFamily("wattshift_meter_messages", "Site-meter messages received, by outcome",
                                       labels=["outcome"])
        messages.add_metric(["ok"], self.meter.readings)
        messages.add_metric(["invalid"], self.meter.errors)
        yield messages


class MqttCollector(Collector):
    """``wattshift_mqtt_*``: connected or not, connections made, commands by verdict, and
    messages dropped while the broker was away."""

    def __init__(self, bridge: MqttBridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        bridge = self.bridge
        yield GaugeMetricFamily("wattshift_mqtt_connected", "1 while connected to the MQTT broker",
                                value=1 if bridge.connected.is_set() else 0)
        yield CounterMetricFamily("wattshift_mqtt_connections", "Successful connections to the broker",
                                  value=bridge.connections)
        commands = CounterMetricFamily("wattshift_mqtt_commands", "Commands received over MQTT, by verdict",
                                       labels=["verdict"])
        for verdict in ("accepted", "rejected"):
            commands.add_metric([verdict], bridge.verdicts.get(verdict, 0))
        yield commands
        yield CounterMetricFamily("wattshift_mqtt_dropped_messages",
                                  "Decisions, events and replies dropped from a full queue while offline",
                                  value=bridge.dropped)


class AgentCollector(Collector):
    """``wattshift_agent_*``: per GPU node driven through a host's agent, whether its readings are
    fresh (``up``; 0 means the node counts at its maximum), their age, the agent's clock offset,
    whether it fell back to its safe cap, and the messages accepted and refused by reason."""

    def __init__(self, link: AgentLink) -> None:
        self.link = link

    def collect(self) -> Iterator[Metric]:
        labels = ["node", "host"]
        up = GaugeMetricFamily("wattshift_agent_up", "1 while the node's agent is online and its readings fresh",
                               labels=labels)
        age = GaugeMetricFamily("wattshift_agent_reading_age_seconds", "Age of the agent's last accepted reading",
                                labels=labels)
        offset = GaugeMetricFamily("wattshift_agent_clock_offset_seconds",
                                   "The agent's clock minus the controller's, at its last reading", labels=labels)
        safe = GaugeMetricFamily("wattshift_agent_safe_cap", "1 if the agent moved its cards to its safe cap",
                                 labels=labels)
        accepted = CounterMetricFamily("wattshift_agent_readings", "Readings accepted from the agent", labels=labels)
        refused = CounterMetricFamily("wattshift_agent_messages_refused",
                                      "Messages on the agent's topics refused, by reason", labels=[*labels, "reason"])
        for host, state in list(self.link.hosts.items()):
            names = [state.device_id, host]
            up.add_metric(names, 1 if self.link.fresh(host) else 0)
            seconds = self.link.age_seconds(host)
            if seconds is not None:
                age.add_metric(names, seconds)
            if state.clock_offset_seconds is not None:
                offset.add_metric(names, state.clock_offset_seconds)
            safe.add_metric(names, 1 if state.readings is not None and state.readings.safe_cap else 0)
            accepted.add_metric(names, state.accepted)
            for reason in REFUSALS:
                if reason != "unknown_host":
                    refused.add_metric([*names, reason], state.refused.get(reason, 0))
        yield from (up, age, offset, safe, accepted, refused)
        yield CounterMetricFamily("wattshift_agent_unknown_host_messages",
                                  "Messages on the topics of agent hosts the site file does not name",
                                  value=self.link.unknown_refused)
