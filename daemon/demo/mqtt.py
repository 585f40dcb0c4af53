"""The demo's MQTT side: a private Mosquitto, the site file's ``mqtt`` block (with a simulated
site meter on it), and what to type to watch the site and command it.

``--mqtt auto`` (the default) uses Debian's mosquitto when it is installed and says how to get
it when not; ``on`` insists; ``off`` runs without.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, TextIO

from wattshift.simulators.broker import (
    INSTALL_HINT,
    BrokerUnavailable,
    PrivateBroker,
    find_binary,
)
from wattshift.simulators.site_meter import site_file_block

MqttMode = Literal["auto", "on", "off"]
BROKER_HOST = "127.0.0.1"
PREFIX = "wattshift/demo"  # the default for a site named "demo"
METER_TOPIC = "demo/site-meter/SENSOR"


@contextlib.asynccontextmanager
async def demo_broker(mode: MqttMode, host: str, out: TextIO) -> AsyncIterator[PrivateBroker | None]:
    """A private Mosquitto on ``host`` and a free port, or None (and why, on ``out``). Started
    and stopped on a worker thread: waiting for its port must not stall the simulators."""
    if mode == "off":
        yield None
        return
    if find_binary("mosquitto") is None:
        if mode == "on":
            raise BrokerUnavailable(f"--mqtt on: mosquitto is not installed: {INSTALL_HINT}")
        print(f"MQTT off: mosquitto is not installed ({INSTALL_HINT} to see the site on MQTT)", file=out, flush=True)
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="wattshift-demo-mosquitto-") as folder:
        broker = PrivateBroker(Path(folder), host)
        await asyncio.to_thread(broker.start)
        try:
            yield broker
        finally:
            await asyncio.to_thread(broker.stop)


def mqtt_block(broker: PrivateBroker, tick_s: float) -> dict[str, Any]:
    """The site file's ``mqtt`` section for the demo: state as often as the loop ticks, and a
    meter that goes stale after a few silent seconds."""
    return {
        "host": broker.host,
        "port": broker.port,
        "publish_min_interval_seconds": tick_s,
        "reconnect_max_seconds": 5,
        "meter": site_file_block(METER_TOPIC, stale_after_seconds=max(5.0, 3 * tick_s)),
    }


def instructions(broker: PrivateBroker, unmetered_kw: float, cut_kw: float) -> str:
    at = f"-h {broker.host} -p {broker.port}"
    cut = json.dumps({"command": "budget", "id": "cut-1", "limit_kw": round(cut_kw), "duration_seconds": 30},
                     separators=(",", ":"))
    return "\n".join([
        f"MQTT: a private Mosquitto on {broker.host}:{broker.port}; a simulated site meter publishes the true "
        f"draw on {METER_TOPIC}, {unmetered_kw:.1f} kW of it cooling and losses no device reports",
        f"  watch:   mosquitto_sub {at} -t '{PREFIX}/#' -v",
        f"  command: mosquitto_pub {at} -t {PREFIX}/cmd -m '{cut}'",
    ])
