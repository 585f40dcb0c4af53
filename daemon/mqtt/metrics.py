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
