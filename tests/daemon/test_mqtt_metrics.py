"""The site meter's metrics, as Prometheus scrapes them: nothing made up before the first
reading, stale once it is old, and refused messages counted apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from wattshift.daemon.mqtt.metrics import MeterCollector
from wattshift.drivers.mqtt_meter import SiteMeter


def test_meter_metrics_follow_the_meter():
    now = [0.0]
    meter = SiteMeter("site/meter", "power_kw", "kW", stale_after_seconds=10, clock=lambda: now[0])
    overhead = [0.0]
    registry = CollectorRegistry()
    registry.register(MeterCollector(meter, lambda: overhead[0]))
    value = registry.get_sample_value

    assert value("wattshift_meter_power_watts") is None  # no reading yet: no value, not a zero
    assert value("wattshift_meter_stale") == 1

    meter.feed(b'{"power_kw": 812.5}')
    meter.feed(b'{"power_kw": "lots"}')
    now[0] = 4.0
    overhead[0] = 15_000.0
    assert value("wattshift_meter_power_watts") == 812_500
    assert value("wattshift_meter_age_seconds") == 4
    assert value("wattshift_meter_stale") == 0
    assert value("wattshift_meter_overhead_watts") == 15_000
    assert value("wattshift_meter_messages_total", {"outcome": "ok"}) == 1
    assert value("wattshift_meter_messages_total", {"outcome": "invalid"}) == 1

    now[0] = 11.0
    assert value("wattshift_meter_stale") == 1
    assert value("wattshift_meter_power_watts") == 812_500  # the last good reading stays visible
    text = generate_latest(registry).decode()
    assert "# TYPE wattshift_meter_messages_total counter" in text
